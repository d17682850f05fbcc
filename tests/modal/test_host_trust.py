"""Security: every value a Modal Dict returns is unpickled by Modal's client (modal._serialization.
deserialize: a full pickle.Unpickler; the fake does cloudpickle.loads likewise). The caller
reads the shared control Dict "agex-control" (one for every agex app of the workspace) at
the start of every run (host.arun: control.get(session/<agent>/<session>)) and after a
restart (restarted/<run>). Anything that can write that Dict -- any agex container of the
workspace, e.g. agent code that got past the sandbox in *another* agent's container --
runs code in the caller process, which holds the user's secrets."""

from __future__ import annotations

import os

from agex import Agent, connect_host, connect_state
from agex.testing.host import scripted
from agex_host_modal import remote


class Shaped:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"echo $PPID >> {self.marker}",))  # who unpickled it


def test_the_caller_never_unpickles_what_a_container_put_in_the_control_dict(
    fake, tmp_path
) -> None:
    marker = tmp_path / "caller-ran-it"
    agent = Agent(
        name="victim",
        host=connect_host(provider="modal", secrets="llm-keys"),
        state=connect_state(type="ephemeral"),
        llm=scripted("task_success(1)"),
    )

    @agent.task
    def one() -> int:
        """One."""

    # What any container of the workspace can do: the key is predictable from names.
    control = fake.Dict.from_name(remote.CONTROL, create_if_missing=True)
    control.put(remote.session_key("victim", "default"), Shaped(str(marker)))
    control.put(remote.cancel_key("victim", "default", 0), Shaped(str(marker)))

    one()  # an ordinary call
    assert not marker.exists(), (
        "the caller unpickled what a container shaped: " + marker.read_text()
    )
