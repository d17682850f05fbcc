"""Storages "modal-dict" and "modal-volume": versioned state kept in Modal.

- ``modal-dict`` (``dicts``): every key in a Modal Dict, which forgets an entry nobody used
  for 7 days, so the Dict is looked after daily.
- ``modal-volume`` (``volumes``): every key in a Modal Volume, which keeps it until it is
  deleted, and the small ones in a Dict: a ``modal-dict`` storage of the same name is its
  index, which answers reads first and moves heads atomically.

Both move a key by claims in the Dict (``claims``), which has no compare-and-set. The Volume's
files are laid out by ``layout``; a container keeps local copies of what never changes
(``copies``); time is read from ``clock``; failures in Modal become agex errors
(``surfaced``).
"""

from agex_host_modal.storage.clock import DAY
from agex_host_modal.storage.dicts import (
    DICT_UPDATE_ENTRIES,
    LEASES,
    LEGACY_BEFORE,
    LOOK_THREADS,
    PIECE,
    REQUEST,
    SETTLE,
    WINDOW,
    ModalDictStorage,
)
from agex_host_modal.storage.layout import FAN
from agex_host_modal.storage.volumes import (
    MOUNT_ROOT,
    VOLUME_VERSION,
    ModalVolumeStorage,
    mount_point,
    volume,
)

__all__ = [
    "DAY",
    "DICT_UPDATE_ENTRIES",
    "FAN",
    "LEASES",
    "LEGACY_BEFORE",
    "LOOK_THREADS",
    "MOUNT_ROOT",
    "PIECE",
    "REQUEST",
    "SETTLE",
    "VOLUME_VERSION",
    "WINDOW",
    "ModalDictStorage",
    "ModalVolumeStorage",
    "mount_point",
    "volume",
]
