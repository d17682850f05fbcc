"""agex's errors cross a pickle intact: an error raised where a task runs (a Modal
container, an isolated worker) reaches its caller as the same type, message and details,
whatever its ``__init__`` takes."""

from __future__ import annotations

import pickle

import cloudpickle
import pytest

from agex import errors

MADE = [
    errors.ProviderNotInstalledError("storage", "modal-dict", "agex-host-modal", "pip x"),
    errors.UnknownProviderError("host", "nope", "no host provider 'nope'"),
    errors.DuplicateProviderError("host", "twice", ["a", "b"]),
    errors.CodeRejected("no imports", 3, "import os"),
    errors.SandboxTimeout("too slow", output="partial"),
    errors.StateLoadError("gone"),
]


@pytest.mark.parametrize("dumps", [pickle.dumps, cloudpickle.dumps], ids=["pickle", "cloudpickle"])
@pytest.mark.parametrize("error", MADE, ids=lambda e: type(e).__name__)
def test_an_agex_error_survives_a_pickle(error, dumps):
    loaded = pickle.loads(dumps(error))
    assert type(loaded) is type(error)
    assert str(loaded) == str(error)
    assert vars(loaded) == vars(error)
