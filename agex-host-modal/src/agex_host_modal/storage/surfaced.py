"""What a failure in Modal or in a Volume's files becomes: an agex error naming the storage
and the cause (``_surfaced``, around every method of the two storages that reaches Modal)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar, cast

from agex.errors import AgexError, StateLoadError, StateWriteError

_Method = TypeVar("_Method", bound=Callable[..., Any])


def _surfaced(doing: str) -> Callable[[_Method], _Method]:
    """A storage method whose failures in Modal or in the Volume's files (a request too
    large, Modal unreachable, a full or read-only mount) raise agex errors naming the
    store and the cause. A failed write leaves the session on its last commit."""

    def wrap(method: _Method) -> _Method:
        @functools.wraps(method)
        def surfaced(self: Any, *args: Any, **kwargs: Any) -> Any:
            from modal.exception import Error as ModalError

            try:
                return method(self, *args, **kwargs)
            except AgexError:
                raise
            except (OSError, ModalError) as exc:
                what = f"storage {self.provider} {self.name!r}"
                cause = f"{type(exc).__name__}: {exc}"
                if doing == "write":
                    raise StateWriteError(
                        f"{what} could not take a write ({cause}); the session stays on its "
                        "last commit: run the task again once the cause is gone"
                    ) from exc
                raise StateLoadError(f"{what} could not be read ({cause})") from exc

        return cast(_Method, surfaced)

    return wrap
