import os
import shutil
import subprocess
import sys


def agex(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("agex", path=os.path.dirname(sys.executable))
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=120)


def test_demo_runs_offline() -> None:
    result = agex("demo", "--delay", "0")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "-- analyst . step 1 . action" in out
    assert "south:   4475.00" in out
    assert "Result: {'top_region': 'south', 'total': 4475.0, 'growth_percent': 90.0}" in out


def test_demo_with_an_unknown_provider_says_so() -> None:
    result = agex("demo", "--llm", "nope")
    assert result.returncode == 1
    assert result.stderr.startswith("Error: No llm provider named 'nope'")
    assert "Traceback" not in result.stderr


def test_events_in_colour_on_a_terminal(monkeypatch, capsys) -> None:
    from agex import pprint_events
    from agex.events import ErrorEvent

    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    monkeypatch.delenv("NO_COLOR", raising=False)
    pprint_events(ErrorEvent(agent_name="a", session="s", step=1, error="boom"))
    assert "\x1b[31mboom\x1b[0m" in capsys.readouterr().out
