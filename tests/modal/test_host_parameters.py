"""The modal host's parameters as Modal takes them: ``gpu`` (a type, "TYPE:count", or a list
of fallbacks), ``memory`` (a request in MiB, or a (request, limit) pair), ``preemptible``, and
the image's Python, checked against what Modal's image builder supports before anything is
sent. Each reaches the built ``modal.App``, and ``dump_config`` rebuilds the same host."""

from __future__ import annotations

import dataclasses
import warnings

import pytest
from modal._utils.async_utils import synchronizer

from agex import Agent, connect_host
from agex.errors import RemoteExecutionError
from agex.remote.dependencies import needs
from agex.testing.host import scripted
from agex_host_modal import app as app_module


def modal_host(**options):
    return connect_host(provider="modal", **{"secrets": "llm-keys", **options})


def built_info(host):
    """What the real SDK recorded of the function ``host.build`` made (offline)."""
    app = host.build(Agent(host=host))
    functions = synchronizer._translate_in(app)._local_state.functions
    return synchronizer._translate_out(functions["run_task"]).info()


def rebuilt(host):
    config = host.dump_config()
    options = {k: v for k, v in config.items() if k != "provider"}
    return connect_host(provider=config["provider"], **options)


# -- gpu -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("gpu", "gpus"),
    [
        ("T4", [("T4", 1)]),
        ("a10g", [("A10G", 1)]),  # Modal reads types in any case
        ("H100:8", [("H100", 8)]),
        ("H100!", [("H100!", 1)]),  # exactly an H100
        ("B200+:2", [("B200+", 2)]),  # a B200 or better
        (["H100", "A100-80GB:2"], [("H100", 1), ("A100-80GB", 2)]),  # fallbacks, in order
    ],
)
def test_gpu_requests_reach_the_function(gpu, gpus):
    host = modal_host(gpu=gpu)
    assert built_info(host).gpus == gpus
    assert rebuilt(host).dump_config() == host.dump_config()


@pytest.mark.parametrize(
    ("gpu", "message"),
    [
        ("", "gpu must be a Modal GPU type"),
        ("H100:x", "gpu must be a Modal GPU type"),
        ("H 100", "gpu must be a Modal GPU type"),
        ("H100::2", "gpu must be a Modal GPU type"),
        ([], "or a list of them"),
        (["T4", 2], "or a list of them"),
        ({"T4": 1}, "or a list of them"),
        ("H100:0", "from 1 to 8 of type H100"),
        ("H100:9", "from 1 to 8 of type H100"),
        ("A10:5", "from 1 to 4 of type A10"),
        (["T4", "L4:12"], "from 1 to 8 of type L4"),
    ],
)
def test_a_gpu_request_modal_would_refuse_is_refused_here(gpu, message):
    with pytest.raises(ValueError, match=message):
        modal_host(gpu=gpu)


def test_a_gpu_type_modal_does_not_list_is_passed_on_with_a_warning():
    with pytest.warns(UserWarning, match=r"'X9000:2' names a type .* does not list"):
        host = modal_host(gpu="X9000:2")
    assert built_info(host).gpus == [("X9000", 2)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        modal_host(gpu=["L40S", "A100-40GB", "RTX-PRO-6000"])  # listed: no warning


# -- memory ----------------------------------------------------------------------------------


def test_memory_is_a_request_in_mib_or_a_request_and_a_limit():
    assert built_info(modal_host(memory=4096)).memory_mib == 4096
    host = modal_host(memory=(4096, 8192))
    assert built_info(host).memory_mib == (4096, 8192)
    assert host.dump_config()["memory"] == [4096, 8192]  # as JSON carries it
    assert rebuilt(host).memory == (4096, 8192)
    assert modal_host(memory=[1024, 1024]).memory == (1024, 1024)


@pytest.mark.parametrize(
    ("memory", "message"),
    [
        ((8192, 4096), "limit below the request"),
        ((0, 4096), "whole number of MiB"),
        ((4096,), "whole number of MiB"),
        ((1, 2, 3), "whole number of MiB"),
        ("4096", "whole number of MiB"),
        (True, "whole number of MiB"),
        (-1, "whole number of MiB"),
    ],
)
def test_memory_modal_would_refuse_is_refused_here(memory, message):
    with pytest.raises(ValueError, match=message):
        modal_host(memory=memory)


# -- preemption ------------------------------------------------------------------------------


def test_the_function_is_not_preemptible_unless_asked_or_on_a_gpu():
    assert built_info(modal_host()).nonpreemptible is True
    assert built_info(modal_host(preemptible=True)).nonpreemptible is False
    assert built_info(modal_host(preemptible=False)).nonpreemptible is True
    # Modal offers GPU functions only on preemptible machines.
    assert built_info(modal_host(gpu="A10G")).nonpreemptible is False
    host = modal_host(preemptible=True)
    assert host.dump_config()["preemptible"] is True
    assert rebuilt(host).nonpreemptible is False


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"preemptible": False, "gpu": "T4"}, "no GPU function on non-preemptible"),
        ({"preemptible": "no"}, "preemptible must be True, False or None"),
    ],
)
def test_preemptible_modal_would_refuse_is_refused_here(options, message):
    with pytest.raises(ValueError, match=message):
        modal_host(**options)


def test_the_seed_example_rebuilds_from_its_config():
    host = modal_host(gpu="A10G", memory=4096, timeout=600.0, scaledown_window=300)
    assert rebuilt(host).dump_config() == host.dump_config()


# -- the image's Python ------------------------------------------------------------------------


def on_python(monkeypatch, version):
    monkeypatch.setattr(
        app_module,
        "needs",
        lambda agent, tasks=(): dataclasses.replace(needs(agent, tasks), python=version),
    )


def test_a_python_no_modal_image_builder_supports_is_refused_offline(monkeypatch):
    on_python(monkeypatch, "3.9")
    monkeypatch.delenv("MODAL_IMAGE_BUILDER_VERSION", raising=False)
    with pytest.raises(RemoteExecutionError, match=r"supports Python 3\.10, 3\.11.*3\.9") as e:
        modal_host().build(Agent(host=modal_host()))
    assert "Run agex under one of those" in str(e.value)


def test_the_configured_image_builder_version_decides(monkeypatch):
    on_python(monkeypatch, "3.13")
    monkeypatch.setenv("MODAL_IMAGE_BUILDER_VERSION", "2024.04")
    with pytest.raises(RemoteExecutionError, match=r"2024\.04.*Python 3\.10, 3\.11, 3\.12,"):
        modal_host().build(Agent(host=modal_host()))
    monkeypatch.setenv("MODAL_IMAGE_BUILDER_VERSION", "2024.10")
    modal_host().build(Agent(host=modal_host()))  # 3.13 is supported there


def test_an_unsupported_python_fails_at_first_use_before_any_deploy(fake, monkeypatch):
    on_python(monkeypatch, "3.9")
    agent = Agent(host=modal_host(), llm=scripted("task_success(1)"))

    @agent.task
    def one() -> int:
        """One."""

    with pytest.raises(RemoteExecutionError, match="supports Python"):
        one()
    assert fake.deploys == []
    assert fake.calls == 0
