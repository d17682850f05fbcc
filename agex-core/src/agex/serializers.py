"""How values become bytes and back: the serializer protocol and core's cloudpickle one."""

from __future__ import annotations

import pickle
from typing import Any

from agex.protocols import Serializer as Serializer


class CloudpickleSerializer:
    """Pickle, extended to carry by value what pickle can only name: lambdas, closures and
    classes defined in ``__main__`` or a notebook. That is what lets an agent defined in a
    script run on a server that has never seen the script.

    Loading a pickle runs code: only load bytes from a source you trust.
    """

    def __init__(self) -> None:
        import cloudpickle  # the protocol's importers need not load it

        self._dumps = cloudpickle.dumps

    def dumps(self, value: Any) -> bytes:
        data: bytes = self._dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        return data

    def loads(self, data: bytes) -> Any:
        return pickle.loads(data)
