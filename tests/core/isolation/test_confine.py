"""The confinement of a worker, against the real kernel: each test starts a fresh interpreter
that confines itself, tries one hostile thing and says on stdout (as JSON) what happened.

A test asserts both that the attempt failed with a clear error and that nothing happened
outside: the file was not written, the listener got no connection, the process still runs.
A layer's test is skipped only when this machine lacks that layer, saying why.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agex.isolation import confine as confine_module
from agex.isolation import landlock, seccomp
from agex.isolation.confine import default_readable, kernel_unavailable, layers

SECRET = "agex-test-secret-6f1d0c"
NOBODY = 65534

linux_only = pytest.mark.skipif(sys.platform != "linux", reason="confinement layers need Linux")
needs_kernel = pytest.mark.skipif(
    sys.platform != "linux" or kernel_unavailable() is not None,
    reason=f"level 'kernel' unavailable here: {kernel_unavailable()}",
)
needs_landlock = pytest.mark.skipif(
    sys.platform != "linux" or landlock.available() is not None,
    reason=f"no Landlock here: {landlock.available()}",
)
needs_root = pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0,
    reason="needs root, to become another user",
)

# The child: confine (unless told not to), then run ATTEMPT's body as a function.
CHILD = """\
import json, os, signal, socket, sys
ctx = json.loads(sys.argv[1])
from agex.isolation.confine import Confinement, confine
from agex.isolation.limits import Limits
{prelude}
report = None
if ctx["level"]:
    try:
        report = confine(
            Confinement(
                level=ctx["level"],
                limits=Limits(**ctx["limits"]),
                network=ctx["network"],
                readable=tuple(ctx["readable"]),
                exclude=tuple(ctx["exclude"]),
            ),
            ctx["scratch"],
        )
    except BaseException as error:
        print(json.dumps({{"confine_error": f"{{type(error).__name__}}: {{error}}"}}))
        raise SystemExit(0)

def attempt():
{body}

try:
    out = {{"ok": True, "value": attempt()}}
except BaseException as error:
    out = {{"ok": False, "type": type(error).__name__, "errno": getattr(error, "errno", None),
           "message": str(error)}}
print(json.dumps({{"report": report, **out}}, default=str))
"""


@pytest.fixture
def world() -> Iterator[dict[str, Any]]:
    """A scratch directory, and outside it a token file, a state directory and listeners."""
    # /tmp, not pytest's tmp_path: a worker that becomes nobody must reach its scratch.
    scratch = tempfile.mkdtemp(prefix="agex-test-scratch-")
    outside = tempfile.mkdtemp(prefix="agex-test-outside-")
    os.chmod(outside, 0o755)
    token = Path(outside, "token")
    token.write_text(SECRET)
    token.chmod(0o644)  # readable by anyone: only confinement may keep the worker out
    state = Path(outside, "state")
    state.mkdir()
    Path(state, "session.json").write_text(SECRET)
    tcp = socket.create_server(("127.0.0.1", 0))
    unix_path = str(Path(outside, "listener.sock"))
    unix = socket.socket(socket.AF_UNIX)
    unix.bind(unix_path)
    unix.listen()
    os.chmod(unix_path, 0o777)
    abstract_name = f"\0agex-test-{os.getpid()}-{time.monotonic_ns()}"
    abstract = socket.socket(socket.AF_UNIX)
    abstract.bind(abstract_name)
    abstract.listen()
    for listener in (tcp, unix, abstract):
        listener.setblocking(False)
    try:
        yield {
            "scratch": scratch,
            "outside": outside,
            "token": str(token),
            "state": str(state),
            "tcp_port": tcp.getsockname()[1],
            "unix_path": unix_path,
            "abstract_name": abstract_name,
            "listeners": (tcp, unix, abstract),
        }
    finally:
        for listener in (tcp, unix, abstract):
            listener.close()
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.rmtree(outside, ignore_errors=True)


def unprivileged(world: dict[str, Any]) -> str:
    """A prelude that makes the child an ordinary user first, as a supervisor run by one
    (level "process" refuses a root one whose workers could not become nobody)."""
    imports = "import ctypes, ctypes.util, resource\n"  # the new user may not read them
    if os.geteuid() != 0:
        return imports
    os.chown(world["scratch"], 4242, 4242)
    drop = "os.setgroups([])\nos.setresgid(4242, 4242, 4242)\nos.setresuid(4242, 4242, 4242)\n"
    return imports + drop


def run_child(
    world: dict[str, Any],
    body: str,
    *,
    level: str | None = "kernel",
    prelude: str = "",
    network: bool = False,
    memory_mb: int = 1024,
    extra: dict[str, Any] | None = None,
    pass_fds: tuple[int, ...] = (),
    readable: tuple[str, ...] = (),
    exclude: tuple[str, ...] | None = None,
) -> dict[str, Any]:
    ctx = {key: value for key, value in world.items() if key != "listeners"} | {
        "level": level,
        "limits": {"memory_mb": memory_mb},
        "network": network,
        "readable": list(readable),
        "exclude": [world["outside"]] if exclude is None else list(exclude),
        "parent": os.getpid(),
        **(extra or {}),
    }
    code = CHILD.format(
        prelude=textwrap.dedent(prelude), body=textwrap.indent(textwrap.dedent(body), "    ")
    )
    env = {**os.environ, "AGEX_TEST_SECRET": SECRET}
    done = subprocess.run(
        [sys.executable, "-c", code, json.dumps(ctx)],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        pass_fds=pass_fds,
        start_new_session=True,  # a kill(0, ...) that got through would stop at the child
    )
    lines = done.stdout.strip().splitlines()
    assert lines, f"no report from the child (status {done.returncode}): {done.stderr}"
    result: dict[str, Any] = json.loads(lines[-1])
    assert "confine_error" not in result, result["confine_error"]
    return result


def refused(result: dict[str, Any], *errnos: int) -> None:
    """The attempt failed with an OSError carrying one of ``errnos``."""
    assert not result["ok"], f"the attempt succeeded: {result.get('value')!r}"
    assert result["errno"] in errnos, result
    assert result["type"] in ("PermissionError", "OSError", "ConnectionRefusedError"), result


def nothing_accepted(world: dict[str, Any]) -> None:
    for listener in world["listeners"]:
        with pytest.raises(BlockingIOError):
            listener.accept()


EPERM, EACCES, ENOSYS = 1, 13, 38


# Running programs and making processes.


@needs_kernel
@pytest.mark.parametrize(
    "body",
    [
        pytest.param("import subprocess\nsubprocess.run(['/bin/true'])", id="subprocess"),
        pytest.param("os.execv('/bin/true', ['true'])", id="execv"),
        pytest.param("os.posix_spawn('/bin/true', ['true'], {})", id="posix_spawn"),
        pytest.param("os.fork()", id="fork"),
    ],
)
def test_no_programs_no_processes(world: dict[str, Any], body: str) -> None:
    refused(run_child(world, body), EPERM)


@needs_kernel
def test_raw_clone_without_clone_thread_is_refused(world: dict[str, Any]) -> None:
    result = run_child(
        world,
        """
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        number = {"x86_64": 56, "aarch64": 220}[os.uname().machine]
        args = [ctypes.c_long(a) for a in (number, signal.SIGCHLD, 0, 0, 0, 0)]
        pid = libc.syscall(*args)
        if pid == 0:
            os._exit(0)
        if pid > 0:
            os.waitpid(pid, 0)
            return "cloned"
        raise OSError(ctypes.get_errno(), "clone")
        """,
    )
    refused(result, EPERM)


@needs_kernel
def test_clone3_says_enosys_so_libc_falls_back(world: dict[str, Any]) -> None:
    result = run_child(
        world,
        """
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        args = bytes(88)  # struct clone_args, all zero: a plain fork
        pid = libc.syscall(ctypes.c_long(435), ctypes.c_char_p(args), ctypes.c_long(88))
        if pid == 0:
            os._exit(0)
        if pid > 0:
            return "cloned"
        raise OSError(ctypes.get_errno(), "clone3")
        """,
    )
    assert not result["ok"]
    assert result["errno"] == ENOSYS


# What a worker must still be able to do.


@needs_kernel
def test_python_still_works_inside(world: dict[str, Any]) -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        ours.sendall(b"hello")
        result = run_child(
            world,
            """
            import decimal, fractions, json, re, threading, time
            out = {}
            def work():
                out["sum"] = str(sum(fractions.Fraction(1, n) for n in range(1, 40)))
            thread = threading.Thread(target=work)
            thread.start()
            thread.join()
            out["decimal"] = str(decimal.Decimal(1) / decimal.Decimal(7))
            out["re"] = re.sub(r"\\d", "#", "a1b2")
            out["json"] = json.loads(json.dumps({"a": [1, 2]}))
            block = bytearray(200 * 1024 * 1024)  # a real allocation, well under the limit
            block[-1] = 1
            start = time.monotonic()
            time.sleep(0.01)
            out["slept"] = time.monotonic() - start >= 0.01
            out["time"] = time.time() > 0
            out["random"] = len(os.urandom(16))
            out["pid"] = os.getpid()
            import resource
            out["limit"] = resource.getrlimit(resource.RLIMIT_AS)[0]
            out["cpus"] = os.cpu_count()
            sock = socket.socket(fileno=ctx["fd"])
            out["received"] = sock.recv(5).decode()
            sock.sendall(b"world")
            import asyncio
            out["asyncio"] = asyncio.run(asyncio.sleep(0, "ran"))
            return out
            """,
            extra={"fd": theirs.fileno()},
            pass_fds=(theirs.fileno(),),
        )
        assert result["ok"], result
        value = result["value"]
        assert value["decimal"].startswith("0.142857")
        assert value["re"] == "a#b#"
        assert value["json"] == {"a": [1, 2]}
        assert value["slept"]
        assert value["time"]
        assert value["random"] == 16
        assert value["received"] == "hello"
        assert value["limit"] == 1024 * 1024 * 1024
        assert value["cpus"] >= 1
        assert value["asyncio"] == "ran"
        assert ours.recv(5) == b"world"


@needs_kernel
def test_imports_after_confinement_including_c_extensions(world: dict[str, Any]) -> None:
    result = run_child(
        world,
        """
        loaded = set(sys.modules)
        import ctypes, decimal, json, _ssl, sqlite3, zoneinfo, hashlib, zlib
        new = {"ctypes", "decimal", "_ssl", "sqlite3", "zlib"} - loaded
        sqlite3.connect(":memory:").execute("select 1").fetchall()
        zoneinfo.ZoneInfo("UTC")
        if ctx["numpy"]:  # a large C extension with threads of its own, when installed
            import numpy
            square = numpy.ones((200, 200))
            assert (square @ square).sum() == 200**3
        return sorted(new)
        """,
        extra={"numpy": importlib.util.find_spec("numpy") is not None},
    )
    assert result["ok"], result
    assert "_ssl" in result["value"]  # really loaded after confinement, from disk


@needs_kernel
def test_scratch_is_writable(world: dict[str, Any]) -> None:
    result = run_child(
        world,
        """
        scratch = ctx["scratch"]
        os.makedirs(os.path.join(scratch, "a", "b"))
        path = os.path.join(scratch, "a", "file.txt")
        with open(path, "w") as file:
            file.write("data")
        os.rename(path, os.path.join(scratch, "a", "b", "moved.txt"))
        import tempfile
        with tempfile.NamedTemporaryFile(dir=None) as temporary:
            where = temporary.name
        os.remove(os.path.join(scratch, "a", "b", "moved.txt"))
        with open(os.path.join(scratch, "kept.txt"), "w") as file:
            file.write("kept")
        with open(os.devnull, "w") as null:
            null.write("nothing")
        return {"home": os.environ["HOME"], "temporary": where}
        """,
    )
    assert result["ok"], result
    assert result["value"]["home"] == world["scratch"]
    assert result["value"]["temporary"].startswith(world["scratch"])
    assert Path(world["scratch"], "kept.txt").read_text() == "kept"


# The network.


@needs_kernel
def test_no_tcp_connection(world: dict[str, Any]) -> None:
    body = "socket.create_connection(('127.0.0.1', ctx['tcp_port']), timeout=2)"
    refused(run_child(world, body), EPERM)
    nothing_accepted(world)


@needs_kernel
def test_no_unix_socket_connection(world: dict[str, Any]) -> None:
    body = """
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(ctx["unix_path"])
    """
    refused(run_child(world, body), EPERM)
    nothing_accepted(world)


@needs_kernel
def test_network_allowed_when_asked(world: dict[str, Any]) -> None:
    body = """
    refused = {}
    for family in (socket.AF_UNIX, socket.AF_NETLINK, socket.AF_PACKET):
        try:
            socket.socket(family, socket.SOCK_DGRAM).close()
        except PermissionError:
            refused[family.name] = True
    with socket.create_connection(("127.0.0.1", ctx["tcp_port"]), timeout=2):
        return {"connected": True, "refused": sorted(refused)}
    """
    result = run_child(world, body, network=True)
    assert result["ok"], result
    # TCP/IP only: no named unix sockets (the host's daemons), netlink or raw packets.
    assert result["value"] == {"connected": True, "refused": ["AF_NETLINK", "AF_PACKET", "AF_UNIX"]}
    assert result["report"]["network"].startswith("off: ")
    world["listeners"][0].setblocking(True)
    connection, _ = world["listeners"][0].accept()
    connection.close()


@linux_only
def test_network_namespace_alone_reaches_nothing(world: dict[str, Any]) -> None:
    """Without seccomp's help: the namespace alone has no route to the host's listener."""
    prelude = """
    from agex.isolation import confine as c
    if os.geteuid() == 0:
        c._unshare(c._CLONE_NEWNET)
    else:
        ids = os.geteuid(), os.getegid()
        c._unshare(c._CLONE_NEWUSER | c._CLONE_NEWNET)
        c._map_user_namespace(*ids)
    """
    body = "socket.create_connection(('127.0.0.1', ctx['tcp_port']), timeout=2)"
    try:
        result = run_child(world, body, level=None, prelude=prelude)
    except AssertionError as error:
        if "Operation not permitted" in str(error) or "Invalid argument" in str(error):
            pytest.skip(f"no network namespace here: {error}")
        raise
    refused(result, 101)  # ENETUNREACH: the namespace's loopback is down
    nothing_accepted(world)


# Files.


@needs_landlock
@needs_kernel
def test_no_writing_outside_scratch(world: dict[str, Any]) -> None:
    target = Path(world["outside"], "planted.txt")
    body = f"open({str(target)!r}, 'w').write('x')"
    refused(run_child(world, body), EACCES, EPERM)
    assert not target.exists()


@needs_landlock
@needs_kernel
def test_no_writing_next_to_scratch(world: dict[str, Any]) -> None:
    target = Path(world["scratch"]).parent / f"agex-sibling-{os.getpid()}.txt"
    body = f"open({str(target)!r}, 'w').write('x')"
    try:
        refused(run_child(world, body), EACCES, EPERM)
        assert not target.exists()
    finally:
        with contextlib.suppress(FileNotFoundError):
            target.unlink()


@needs_landlock
@needs_kernel
@pytest.mark.parametrize(
    "body",
    [
        pytest.param("return open(ctx['token']).read()", id="token-file"),
        pytest.param("return open(ctx['state'] + '/session.json').read()", id="state-file"),
        pytest.param("return os.listdir(ctx['state'])", id="state-dir"),
        pytest.param("return open('/etc/passwd').read()", id="etc-passwd"),
        pytest.param("return open(f'/proc/{ctx[\"parent\"]}/environ').read()", id="proc-environ"),
        pytest.param("return open(f'/proc/{ctx[\"parent\"]}/mem', 'rb').read(1)", id="proc-mem"),
    ],
)
def test_no_reading_outside_the_readable_set(world: dict[str, Any], body: str) -> None:
    refused(run_child(world, body), EACCES, EPERM)


@needs_landlock
@needs_kernel
def test_exclusions_win_over_readable_entries(world: dict[str, Any]) -> None:
    """A readable entry above an excluded path, or above the scratch directory (where the
    sibling workers' scratch directories are), is left out whole."""
    sibling = tempfile.mkdtemp(dir=os.path.dirname(world["scratch"]), prefix="agex-sibling-")
    try:
        Path(sibling, "theirs.txt").write_text(SECRET)
        os.chmod(sibling, 0o755)
        Path(world["outside"], "public.txt").write_text("public")
        body = """
        out = {}
        for name in ("token", "public", "sibling"):
            try:
                out[name] = open(ctx[name]).read()
            except PermissionError as error:
                out[name] = error.errno
        return out
        """
        result = run_child(
            world,
            body,
            readable=(world["outside"], os.path.dirname(world["scratch"])),
            exclude=(world["token"],),
            extra={
                "public": str(Path(world["outside"], "public.txt")),
                "sibling": str(Path(sibling, "theirs.txt")),
            },
        )
        assert result["value"] == {"token": EACCES, "public": EACCES, "sibling": EACCES}
    finally:
        shutil.rmtree(sibling)


@needs_kernel
def test_no_chmod_outside(world: dict[str, Any]) -> None:
    before = os.stat(world["token"]).st_mode
    refused(run_child(world, "os.chmod(ctx['token'], 0o777)"), EPERM, EACCES)
    assert os.stat(world["token"]).st_mode == before


def test_default_readable_drops_what_contains_an_excluded_path(tmp_path: Path) -> None:
    everything = default_readable()
    assert sys.base_prefix in everything or os.path.realpath(sys.base_prefix) in everything
    assert "" not in everything
    inside_prefix = os.path.join(sys.prefix, "agex-state", "token")
    kept = default_readable(exclude=[inside_prefix])
    assert os.path.abspath(sys.prefix) not in kept
    assert all(not inside_prefix.startswith(entry.rstrip("/") + "/") for entry in kept)
    unrelated = default_readable(exclude=[str(tmp_path / "elsewhere")])
    assert set(unrelated) == set(everything) - {
        entry for entry in everything if str(tmp_path).startswith(entry.rstrip("/") + "/")
    }


# Secrets in the environment.


@needs_kernel
def test_no_secret_in_the_environment(world: dict[str, Any]) -> None:
    prelude = """
    assert os.environ["AGEX_TEST_SECRET"]
    with open("/proc/self/stat", "rb") as file:
        fields = file.read().rsplit(b")", 1)[1].split()
    env_start, env_end = int(fields[47]), int(fields[48])
    """
    body = """
    import ctypes, posix
    memory = ctypes.string_at(env_start, env_end - env_start)
    return {
        "environ": dict(os.environ),
        "posix": {k.decode(): v.decode() for k, v in posix.environ.items()},
        "in_memory": ctx["secret"].encode() in memory,
        "getenv": os.getenv("AGEX_TEST_SECRET"),
    }
    """
    result = run_child(world, body, prelude=prelude, extra={"secret": SECRET})
    assert result["ok"], result
    value = result["value"]
    assert "AGEX_TEST_SECRET" not in value["environ"]
    assert SECRET not in json.dumps(value["environ"])
    assert "AGEX_TEST_SECRET" not in value["posix"]
    assert value["in_memory"] is False
    assert value["getenv"] is None
    assert value["environ"]["HOME"] == world["scratch"]
    assert set(value["environ"]) <= {"HOME", "TMPDIR", "LANG", "LANGUAGE", "TZ"} | {
        name for name in value["environ"] if name.startswith("LC_")
    }


# Resources.


@needs_kernel
def test_memory_bomb_is_a_memory_error(world: dict[str, Any]) -> None:
    result = run_child(world, "return len(bytearray(2 * 1024 ** 3))", memory_mb=512)
    assert not result["ok"]
    assert result["type"] == "MemoryError", result


@linux_only
def test_limits_are_lowered_for_good(world: dict[str, Any]) -> None:
    body = """
    import resource
    limits = {name: resource.getrlimit(getattr(resource, name))
              for name in ("RLIMIT_AS", "RLIMIT_CORE", "RLIMIT_FSIZE", "RLIMIT_NOFILE")}
    try:
        resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        limits["raised"] = True
    except (ValueError, OSError):
        limits["raised"] = False
    return limits
    """
    prelude = unprivileged(world)
    result = run_child(world, body, level="process", memory_mb=300, prelude=prelude)
    assert result["ok"], result
    value = result["value"]
    assert value["RLIMIT_AS"] == [300 * 1024 * 1024] * 2
    assert value["RLIMIT_CORE"] == [0, 0]
    assert value["RLIMIT_FSIZE"] == [64 * 1024 * 1024] * 2
    assert value["RLIMIT_NOFILE"] == [256, 256]
    assert value["raised"] is False


# Other processes.


@pytest.fixture
def sibling() -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(["sleep", "60"])
    try:
        yield process
    finally:
        process.kill()
        process.wait()


RAW = """
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
x86 = os.uname().machine == "x86_64"
def raw(x86_number, arm_number, *args):
    number = x86_number if x86 else arm_number
    if libc.syscall(*[ctypes.c_long(a) for a in (number, *args)]) != 0:
        raise OSError(ctypes.get_errno(), "refused")
"""
TGKILL = RAW + "raw(234, 131, ctx['sibling'], ctx['sibling'], signal.SIGKILL)"
TKILL = RAW + "raw(200, 130, ctx['sibling'], signal.SIGKILL)"


@needs_kernel
@pytest.mark.parametrize(
    "body",
    [
        pytest.param("os.kill(ctx['parent'], 0)", id="signal-parent"),
        pytest.param("os.kill(ctx['sibling'], signal.SIGKILL)", id="kill-sibling"),
        pytest.param("os.kill(0, 0)", id="signal-group"),
        pytest.param("os.kill(-1, 0)", id="signal-everyone"),
        pytest.param(TGKILL, id="tgkill-sibling"),
        pytest.param(TKILL, id="tkill-sibling"),
    ],
)
def test_no_signals_to_others(
    world: dict[str, Any], sibling: subprocess.Popen[bytes], body: str
) -> None:
    result = run_child(world, body, extra={"sibling": sibling.pid})
    refused(result, EPERM)
    assert sibling.poll() is None


@needs_kernel
def test_signals_to_itself_still_work(world: dict[str, Any]) -> None:
    body = """
    got = []
    signal.signal(signal.SIGUSR1, lambda *_: got.append(1))
    os.kill(os.getpid(), signal.SIGUSR1)
    signal.raise_signal(signal.SIGUSR1)
    return len(got)
    """
    assert run_child(world, body)["value"] == 2


@needs_kernel
@pytest.mark.parametrize("target", ["parent", "sibling"])
def test_no_ptrace(world: dict[str, Any], sibling: subprocess.Popen[bytes], target: str) -> None:
    body = """
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    libc.ptrace.restype = ctypes.c_long
    # PTRACE_SEIZE: would not even stop the target, had it been allowed.
    args = [ctypes.c_long(a) for a in (0x4206, ctx[ctx["target"]], 0, 0)]
    if libc.ptrace(*args) != 0:
        raise OSError(ctypes.get_errno(), "ptrace")
    return "attached"
    """
    result = run_child(world, body, extra={"sibling": sibling.pid, "target": target})
    refused(result, EPERM)
    assert sibling.poll() is None


# Calls no worker needs, each a way out or into the kernel's less-trodden paths: (x86_64,
# aarch64) numbers, called with zero arguments (harmless even if one got through).
REFUSED_CALLS = {
    "ptrace": (101, 117),
    "process_vm_readv": (310, 270),
    "process_vm_writev": (311, 271),
    "execve": (59, 221),
    "execveat": (322, 281),
    "unshare": (272, 97),
    "setns": (308, 268),
    "mount": (165, 40),
    "umount2": (166, 39),
    "pivot_root": (155, 41),
    "chroot": (161, 51),
    "bpf": (321, 280),
    "perf_event_open": (298, 241),
    "userfaultfd": (323, 282),
    "io_uring_setup": (425, 425),
    "keyctl": (250, 219),
    "add_key": (248, 217),
    "kexec_load": (246, 104),
    "init_module": (175, 105),
    "finit_module": (313, 273),
    "reboot": (169, 142),
    "swapon": (167, 224),
    "personality": (135, 92),
    "kcmp": (312, 272),
    "pidfd_open": (434, 434),
    "open_by_handle_at": (304, 265),
    "shmget": (29, 194),
    "msgget": (68, 186),
    "mq_open": (240, 180),
    "inotify_init1": (294, 26),
    "setrlimit": (160, 164),
    "setuid": (105, 146),
    "tkill": (200, 130),
    "rt_sigqueueinfo": (129, 138),
}


@needs_kernel
def test_refused_calls(world: dict[str, Any]) -> None:
    body = """
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    column = 0 if os.uname().machine == "x86_64" else 1
    answers = {}
    for name, numbers in ctx["calls"].items():
        zero = ctypes.c_long(0)
        answers[name] = [libc.syscall(ctypes.c_long(numbers[column]), *[zero] * 5),
                         ctypes.get_errno()]
    pushed = ctypes.c_char(b"x")
    answers["ioctl(TIOCSTI)"] = [libc.ioctl(0, 0x5412, ctypes.byref(pushed)), ctypes.get_errno()]
    return answers
    """
    result = run_child(world, body, extra={"calls": REFUSED_CALLS})
    assert result["ok"], result
    let_through = {
        name: answer for name, answer in result["value"].items() if answer != [-1, EPERM]
    }
    assert let_through == {}


# Layers on their own (each must hold even if another is missing).


@needs_landlock
def test_landlock_alone(world: dict[str, Any], sibling: subprocess.Popen[bytes]) -> None:
    prelude = """
    from agex.isolation import landlock
    from agex.isolation.confine import default_readable
    abi = landlock.restrict(default_readable(exclude=[ctx["outside"]]), [ctx["scratch"]])
    """
    body = """
    out = {"abi": abi}
    def errno_of(action):
        try:
            action()
            return None
        except OSError as error:
            return error.errno
    out["token"] = errno_of(lambda: open(ctx["token"]).read())
    out["write"] = errno_of(lambda: open(ctx["outside"] + "/x", "w"))
    out["scratch"] = errno_of(lambda: open(ctx["scratch"] + "/x", "w").close())
    out["tcp"] = errno_of(lambda: socket.create_connection(("127.0.0.1", ctx["tcp_port"]), 2))
    out["abstract"] = errno_of(lambda: socket.socket(socket.AF_UNIX).connect(ctx["abstract_name"]))
    out["signal"] = errno_of(lambda: os.kill(ctx["sibling"], signal.SIGKILL))
    out["c-extension"] = errno_of(lambda: __import__("_ssl"))
    return out
    """
    result = run_child(world, body, level=None, prelude=prelude, extra={"sibling": sibling.pid})
    assert result["ok"], result
    value = result["value"]
    assert value["token"] == EACCES
    assert value["write"] == EACCES
    assert value["scratch"] is None
    assert value["c-extension"] is None  # reading is enough to map a shared library
    assert not Path(world["outside"], "x").exists()
    if value["abi"] >= 4:
        assert value["tcp"] == EACCES
    if value["abi"] >= 6:
        assert value["abstract"] == EPERM
        assert value["signal"] == EPERM
        assert sibling.poll() is None
    nothing_accepted(world)


@needs_kernel
def test_seccomp_alone(world: dict[str, Any]) -> None:
    prelude = """
    import threading
    from agex.isolation import seccomp
    seccomp.install()
    """
    body = """
    def errno_of(action):
        try:
            action()
            return None
        except OSError as error:
            return error.errno
    out = {
        "fork": errno_of(os.fork),
        "socket": errno_of(socket.socket),
        "socketpair": errno_of(lambda: [s.close() for s in socket.socketpair()]),
    }
    thread = threading.Thread(target=lambda: None)
    thread.start()
    thread.join()
    out["thread"] = "ran"
    return out
    """
    result = run_child(world, body, level=None, prelude=prelude)
    assert result["value"] == {"fork": EPERM, "socket": EPERM, "socketpair": None, "thread": "ran"}


# Users and the report.


@needs_root
@linux_only
def test_becoming_nobody(world: dict[str, Any]) -> None:
    """The user layer's mechanism, whether or not this machine's Python is readable by nobody
    (when it is not, confine keeps uid 0 without capabilities, and says so)."""
    secret = Path(world["outside"], "root-only")
    secret.write_text(SECRET)
    secret.chmod(0o600)
    prelude = """
    from agex.isolation import confine as c
    c._become_nobody(ctx["scratch"])
    """
    body = """
    out = {"ids": [os.getresuid(), os.getresgid(), os.getgroups()]}
    with open(ctx["scratch"] + "/mine", "w") as file:
        file.write("x")
    try:
        open(ctx["secret"]).read()
        out["secret"] = "read"
    except PermissionError:
        out["secret"] = "refused"
    try:
        os.setuid(0)
        out["back"] = "root again"
    except PermissionError:
        out["back"] = "refused"
    with open("/proc/self/status") as status:
        out["caps"] = [line.split()[1] for line in status if line.startswith("CapEff")][0]
    return out
    """
    result = run_child(world, body, level=None, prelude=prelude, extra={"secret": str(secret)})
    assert result["ok"], result
    value = result["value"]
    assert value["ids"] == [[NOBODY] * 3, [NOBODY] * 3, []]
    assert value["secret"] == "refused"
    assert value["back"] == "refused"
    assert int(value["caps"], 16) == 0


@needs_root
@needs_kernel
def test_unprivileged_worker_is_confined_too(world: dict[str, Any]) -> None:
    """A worker that is not root gets its network namespace inside a user namespace (an
    ordinary uid, not nobody: inside, before its maps, a uid reads as nobody's)."""
    user = 4242
    os.chown(world["scratch"], user, user)
    prelude = f"""
    import ctypes, resource, stat, struct, tempfile
    net_before = os.readlink("/proc/self/ns/net")
    os.setgroups([])
    os.setresgid({user}, {user}, {user})
    os.setresuid({user}, {user}, {user})
    """
    body = """
    with open(ctx["scratch"] + "/mine", "w") as file:
        file.write("x")
    return {"net_changed": os.readlink("/proc/self/ns/net") != net_before,
            "ids": [os.getuid(), os.getgid()]}
    """
    result = run_child(world, body, prelude=prelude)
    assert result["ok"], result
    report = result["report"]
    if report["network"] != "on":
        pytest.skip(f"no unprivileged user namespaces here: {report['network']}")
    assert result["value"] == {"net_changed": True, "ids": [user, user]}
    assert os.stat(Path(world["scratch"], "mine")).st_uid == user
    assert report["seccomp"] == "on"
    assert report["user"].startswith("off: already unprivileged")


@needs_kernel
def test_report_and_layers(world: dict[str, Any]) -> None:
    body = """
    with open("/proc/self/status") as status:
        return {line.split(":")[0]: line.split()[1] for line in status
                if line.startswith(("NoNewPrivs", "Seccomp", "CapEff"))}
    """
    # /proc is not readable once Landlock is on: look at the process level here.
    process = run_child(world, body, level="process", prelude=unprivileged(world))
    assert process["ok"], process
    assert process["value"]["NoNewPrivs"] == "1"
    assert int(process["value"]["CapEff"], 16) == 0
    report = process["report"]
    for layer in ("limits", "no_new_privs", "environment"):
        assert report[layer] == "on"
    for layer in ("network", "landlock", "seccomp"):
        assert report[layer] == "off: level 'process'"

    kernel = run_child(world, "return os.getpid()")["report"]
    assert set(kernel) == set(confine_module.LAYERS)
    assert all(v == "on" or v.startswith("off: ") for v in kernel.values()), kernel
    assert kernel["seccomp"] == "on"
    assert kernel["no_new_privs"] == "on"
    predicted = layers("kernel")
    assert set(predicted) == set(kernel)
    for layer in ("seccomp", "landlock", "network"):
        assert (predicted[layer] == "on") == (kernel[layer] == "on"), (layer, predicted, kernel)
    assert layers("process")["seccomp"] == "off: level 'process'"
    assert kernel_unavailable() is None
    assert seccomp.available() is None


@linux_only
def test_confine_refuses_a_threaded_process(world: dict[str, Any]) -> None:
    prelude = """
    import threading, time
    threading.Thread(target=time.sleep, args=(5,), daemon=True).start()
    """
    with pytest.raises(AssertionError, match="single-threaded"):
        run_child(world, "return 1", prelude=prelude)


def test_levels_are_checked() -> None:
    from agex.isolation.confine import Confinement
    from agex.isolation.limits import Limits

    with pytest.raises(ValueError, match="level"):
        Confinement(level="vm", limits=Limits())
    with pytest.raises(ValueError, match="level"):
        layers("none")


def test_importing_is_cheap() -> None:
    code = (
        "import sys; import agex.isolation.confine, agex.isolation.seccomp, "
        "agex.isolation.landlock, agex.isolation.limits; print('ctypes' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr


@needs_root
def test_process_level_as_root_needs_a_user_that_can_read_python(world: dict[str, Any]) -> None:
    """Uid 0 without capabilities still owns root's files: without Landlock, a root
    supervisor's worker must become nobody, or not start."""
    from agex.isolation.confine import process_unavailable

    why = process_unavailable()
    if why is None:
        pytest.skip("nobody can read Python here: workers become nobody")
    code = CHILD.format(prelude="", body="    return 1")
    ctx = {key: value for key, value in world.items() if key != "listeners"} | {
        "level": "process",
        "limits": {"memory_mb": 1024},
        "network": False,
        "readable": [],
        "exclude": [],
        "parent": os.getpid(),
    }
    done = subprocess.run(
        [sys.executable, "-c", code, json.dumps(ctx)], capture_output=True, text=True, timeout=30
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert "must become an unprivileged user" in result["confine_error"]
