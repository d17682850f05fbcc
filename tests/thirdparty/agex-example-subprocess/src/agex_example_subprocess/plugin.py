from typing import Any

from agex import hookimpl


def make_subprocess(**options: Any) -> Any:
    from agex_example_subprocess.host import SubprocessHost

    return SubprocessHost(**options)


@hookimpl
def agex_register_hosts(registry: Any) -> None:
    registry.register("subprocess", make_subprocess)
