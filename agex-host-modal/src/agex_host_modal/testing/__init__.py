"""A stand-in for the part of the Modal SDK the modal host uses, for tests.

``with sdk.use(FakeModal()) as fake:`` and agents on the modal host run "on Modal": deploying
builds the image (the pinned packages installed into a fresh virtual environment, local
sources copied as ``add_local_python_source`` copies them, the files ``add_local_dir``
adds), and each container is a separate process started from that environment, holding
only the secrets' variables, with its Volumes mounted as folders. A file, entry point or
package the image lacks fails here as it would on Modal. Dicts and Volumes live in the
test process (the workspace), which containers reach over a local socket.

``FakeModal(containers="thread")`` plays containers as threads of the test process instead:
much faster, for the caller's-side benchmark and the tests that run storage code "in a
container" in the test process itself; it cannot catch packaging mistakes.

It mirrors Modal's behaviour where agex relies on it:

- ``Dict``: entries expire after 7 days without a read or write (``clock`` is injectable);
  ``put(skip_if_exists=True)`` is atomic.
- ``Volume``: a container sees the Volume as it was when the container started or last
  called ``reload()``; its writes reach others when it calls ``commit()``.
- ``Function.from_name(...).hydrate()`` raises NotFoundError until the app is deployed;
  a deploy fails on a secret that does not exist.
- Without credentials, anything that would reach Modal raises AuthError.
- Methods have Modal's ``.aio`` forms; a blocking form called on a running event loop
  raises ``BlockingCall`` (the real SDK warns).
- A new container takes ``startup`` seconds before its first input runs (a cold start).
- ``preempt(after)`` preempts the next input as Modal may: its container is gone once it
  has yielded ``after`` items, and the input runs again from the start in a new container;
  the caller's stream goes on with that container's items, less as many as it already had
  (Modal's client skips the indexes it has received).

Every method here has the name and parameters of the real one (a test compares them with
the installed ``modal``); it accepts a subset of the parameters, the ones agex passes.
"""

from .api import DICT_TTL, FAKED, BlockingCall, FakeDict, FakeModal, FakeVolume

__all__ = ["DICT_TTL", "FAKED", "BlockingCall", "FakeDict", "FakeModal", "FakeVolume"]
