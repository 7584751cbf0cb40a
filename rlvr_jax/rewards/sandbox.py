"""Run one untrusted Python program in a throwaway sandbox and return its capped output.

Each run is a fresh interpreter inside new user, mount, PID, network, IPC and UTS namespaces:
a read-only minimal root (the interpreter, /usr, a few /etc files) with a size-capped tmpfs
working directory, no network, no capabilities, rlimits, a scrubbed environment, and a wall-clock
kill of the whole PID namespace. This file is the parent side: it stages the program, starts
the trusted launcher (sandbox_launcher.py, run as a script: `python -I -S sandbox_launcher.py
SPEC`), collects the capped output and kills the run at the deadline. The launcher creates the
namespaces and forks their PID 1, which builds the root and reaps; when the program exits, the
kernel kills whatever else is left in the namespace (setsid daemons, double forks).

Limits are per process: a program may hold max_processes x memory_mb of address space in all
(no cgroup here). The weak mode (allow_weak, when namespaces are unavailable) keeps only the
rlimits, a session kill and the scrubbed env, warns on every run, and refuses to run as root.
Needs Linux >= 5.3 (pidfd) on x86_64 or aarch64.
"""

import contextlib
import dataclasses
import json
import logging
import math
import os
import resource
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

PROGRAM_FILE = "main.py"
WORKDIR = "/sandbox"  # the program's cwd, HOME and TMPDIR inside the sandbox (a tmpfs)
_GRACE_S = 1.0  # after SIGTERM, how long the launcher gets to kill the namespace itself
_DRAIN_S = 0.2  # after the launcher exits, how long stray writers may keep the pipes open
# The launcher script, beside this file; it runs with -I, so it imports nothing of the package.
_LAUNCHER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sandbox_launcher.py")
_LAUNCHER_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
_ETC_FILES = ("ld.so.cache", "localtime", "passwd", "group", "nsswitch.conf", "hosts")
_TOP_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc/alternatives")

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, kw_only=True)
class SandboxConfig:
    """Limits of one run. Memory and file limits are per process (rlimits), not per sandbox."""

    timeout_s: float = 5.0  # wall clock from launch to kill, seconds
    memory_mb: int = 512  # address space per process, MiB
    cpu_s: int | None = None  # CPU seconds per process; None: ceil(timeout_s)
    max_output_bytes: int = 1 << 16  # per stream; the rest is discarded and the pipe closed
    max_processes: int = 64  # processes and threads of the program's uid in its namespace
    max_open_files: int = 64  # per process
    max_file_bytes: int = 1 << 20  # largest file a process may write
    scratch_mb: int = 32  # size of the writable tmpfs (cwd, /tmp, /dev/shm), MiB
    nice: int = 10  # added to the program's nice value: the trainer and the killer run first
    allow_weak: bool = False  # without namespaces: rlimits only, and a warning on every run
    tmp_root: str | None = None  # host directory for the per-run staging directory

    def __post_init__(self):
        if not self.timeout_s > 0 or (self.cpu_s is not None and self.cpu_s < 1):
            raise ValueError(f"need timeout_s > 0 and cpu_s >= 1: {self}")
        for name in ("memory_mb", "max_output_bytes", "max_processes", "max_open_files"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1: {self}")
        if self.max_open_files < 8 or self.memory_mb < 32 or self.scratch_mb < 1:
            raise ValueError(f"too small to start Python: {self}")


@dataclasses.dataclass(frozen=True)
class RunResult:
    """What one program did. `exit_code` is negative for a signal and None after a timeout."""

    stdout: str
    stderr: str
    exit_code: int | None
    timed_out: bool
    truncated: bool  # some output went past max_output_bytes
    wall_s: float
    isolation: str  # "full" | "weak"


class SandboxUnavailable(RuntimeError):
    """Namespaces do not work here, and the config does not allow the weak mode."""


class SandboxError(RuntimeError):
    """A run's sandbox could not be set up (the program never ran): a verifier error."""


def _binds() -> list[tuple[str, str, str]]:
    """(kind, path, symlink target) of the host paths the sandbox sees, read-only."""
    out, covered = [], []

    def add(path: str):
        if not os.path.lexists(path) or any(path == c or path.startswith(c + "/") for c in covered):
            return
        if os.path.islink(path):
            out.append(("symlink", path, os.readlink(path)))
        elif os.path.isdir(path):
            out.append(("dir", path, ""))
            covered.append(path)
        elif os.path.isfile(path):
            out.append(("file", path, ""))

    for path in _TOP_DIRS:
        add(path)
    for name in _ETC_FILES:
        add(f"/etc/{name}")
    exe = os.path.realpath(sys.executable)
    for path in (sys.base_prefix, sys.base_exec_prefix, os.path.dirname(exe)):
        add(os.path.realpath(path))
    return out


_STATIC: dict[str, object] = {}
_PROBE_CACHE: dict[str, object] = {}  # "result": "full" or the SandboxUnavailable raised
_PROBE_LOCK = threading.Lock()


def _static() -> dict:
    if not _STATIC:
        _STATIC.update(binds=_binds(), python=os.path.realpath(sys.executable))
    return _STATIC


_PROBE_SOURCE = r"""
import json, os, socket, sys
out = {"pid": os.getpid(), "cwd": os.getcwd()}
out["ro"] = all(os.statvfs(p).f_flag & os.ST_RDONLY for p in ("/", "/usr", sys.prefix))
s = socket.socket()
s.settimeout(1)
try:
    s.connect(("1.1.1.1", 53))
    out["net"] = True
except OSError:
    out["net"] = False
open("scratch", "w").write("x")
status = dict(line.split(":\t", 1) for line in open("/proc/self/status").read().splitlines())
for key in ("CapEff", "CapPrm", "CapBnd", "NoNewPrivs"):
    out[key] = status[key].strip()
print(json.dumps(out))
"""


def _probe_full() -> str:
    cfg = SandboxConfig(timeout_s=30.0)
    try:
        res = _run(_PROBE_SOURCE, b"", cfg, "full", {})
    except SandboxError as e:
        raise SandboxUnavailable(f"the sandbox could not be set up: {e}") from None
    try:
        got = json.loads(res.stdout)
    except ValueError:
        raise SandboxUnavailable(f"probe failed: {res.stdout[-500:]}{res.stderr[-500:]}") from None
    want = {"pid": 2, "cwd": WORKDIR, "ro": True, "net": False, "NoNewPrivs": "1"}
    want.update({k: "0000000000000000" for k in ("CapEff", "CapPrm", "CapBnd")})
    if bad := {k: got.get(k) for k, v in want.items() if got.get(k) != v}:
        raise SandboxUnavailable(f"probe found weak isolation: {bad}")
    return "full"


def probe_isolation() -> str:
    """'full' when namespaced isolation works here (probed once per process); raises otherwise."""
    with _PROBE_LOCK:
        if "result" not in _PROBE_CACHE:
            try:
                _PROBE_CACHE["result"] = _probe_full()
            except SandboxUnavailable as e:
                _PROBE_CACHE["result"] = e
        result = _PROBE_CACHE["result"]
    if isinstance(result, SandboxUnavailable):
        raise SandboxUnavailable(
            f"sandbox: full isolation is unavailable: {result}. It needs unprivileged user "
            "namespaces (sysctl user.max_user_namespaces, kernel.unprivileged_userns_clone, "
            "AppArmor restrict_unprivileged_userns, or the container's seccomp profile). "
            "SandboxConfig(allow_weak=True) runs programs with rlimits only (never as root)."
        )
    return str(result)


def run_program(
    source: str,
    stdin: str | bytes = "",
    cfg: SandboxConfig = SandboxConfig(),  # noqa: B008 - frozen, so a shared default is safe
    *,
    files: dict[str, str] | None = None,
) -> RunResult:
    """Run `source` as main.py (with `files` beside it) on `stdin`; never raises for the program.

    Raises SandboxUnavailable when isolation does not work and `cfg.allow_weak` is False, and
    SandboxError when one run's sandbox could not be set up.
    """
    try:
        isolation = probe_isolation()
    except SandboxUnavailable as e:
        if not cfg.allow_weak:
            raise
        if os.geteuid() == 0:  # the program would be root on the host: kill -9 -1, rm -rf /
            raise SandboxUnavailable(f"{e} The weak mode refuses to run as root.") from None
        log.warning(
            "sandbox: WEAK isolation for this run (rlimits only: the program can read and write "
            "what this user can, use the network, signal this process): %s",
            e,
        )
        isolation = "weak"
    data = stdin.encode() if isinstance(stdin, str) else bytes(stdin)
    return _run(source, data, cfg, isolation, dict(files or {}))


def _stdin_fd(data: bytes) -> int:
    """A sealed memfd holding `data`: the program can read it, never grow or rewrite it."""
    fd = os.memfd_create("stdin", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    import fcntl  # Linux-only module, used here only

    seals = fcntl.F_SEAL_WRITE | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_SEAL
    fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _exited(proc: subprocess.Popen) -> bool:
    """Whether the launcher has exited, without reaping it (its pid and group stay reserved)."""
    return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT | os.WNOHANG) is not None


def _stop(proc: subprocess.Popen):
    """Kill the run: SIGTERM makes the launcher kill PID 1 (hence the namespace) and reap it;
    then SIGKILL the launcher's process group as a backstop, and reap the launcher."""
    if not _exited(proc):
        os.kill(proc.pid, signal.SIGTERM)
        end = time.monotonic() + _GRACE_S
        while not _exited(proc) and time.monotonic() < end:
            time.sleep(0.005)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # the group id cannot be reused before the reap
    proc.wait()


def _run(source: str, stdin: bytes, cfg: SandboxConfig, isolation: str, files: dict) -> RunResult:
    static = _static()
    files[PROGRAM_FILE] = source
    workdir = tempfile.mkdtemp(prefix="rlvr-sbx-", dir=cfg.tmp_root)
    status_r, status_w = os.pipe()
    stdin_fd = proc = None
    try:
        for name, text in files.items():
            if os.sep in name or name.startswith("."):
                raise ValueError(f"file names must be plain: {name!r}")
            with open(os.path.join(workdir, name), "w", encoding="utf-8") as f:
                f.write(text)
        cpu_s = cfg.cpu_s if cfg.cpu_s is not None else math.ceil(cfg.timeout_s)
        spec = {
            "isolation": isolation,
            "dir": workdir,
            "cwd": WORKDIR,  # the program's cwd inside the sandbox
            "program_file": PROGRAM_FILE,
            "python": static["python"],
            "binds": static["binds"],
            "scratch_mb": cfg.scratch_mb,
            "nice": cfg.nice,
            "parent": os.getpid(),
            "status_fd": status_w,
            "limits": [
                (resource.RLIMIT_AS, cfg.memory_mb << 20, cfg.memory_mb << 20),
                (resource.RLIMIT_CPU, cpu_s, cpu_s + 1),  # SIGXCPU, then SIGKILL a second later
                (resource.RLIMIT_FSIZE, cfg.max_file_bytes, cfg.max_file_bytes),
                (resource.RLIMIT_NOFILE, cfg.max_open_files, cfg.max_open_files),
                (resource.RLIMIT_NPROC, cfg.max_processes, cfg.max_processes),
                (resource.RLIMIT_CORE, 0, 0),
                (resource.RLIMIT_MSGQUEUE, 0, 0),
                (resource.RLIMIT_MEMLOCK, 0, 0),
            ],
        }
        stdin_fd = _stdin_fd(stdin)
        argv = [static["python"], "-I", "-S", _LAUNCHER, json.dumps(spec)]
        start = time.monotonic()
        try:
            proc = subprocess.Popen(
                argv,
                stdin=stdin_fd,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=_LAUNCHER_ENV,
                cwd="/",
                pass_fds=(status_w,),
                start_new_session=True,  # setsid in C, not a preexec_fn
            )
        except OSError as e:
            raise SandboxError(f"cannot start the launcher: {e}") from e
        os.close(stdin_fd)
        os.close(status_w)
        stdin_fd = status_w = None
        out, err, truncated, timed_out = _collect(proc, cfg, start + cfg.timeout_s)
        _stop(proc)
        wall_s = time.monotonic() - start
        status = _read_status(status_r)
    finally:
        for fd in (stdin_fd, status_w, status_r):
            if fd is not None:
                os.close(fd)
        if proc is not None and proc.returncode is None:
            _stop(proc)
        shutil.rmtree(workdir, ignore_errors=True)
    if "error" in status and not timed_out:
        raise SandboxError(status["error"])
    if timed_out:
        code = None
    elif isolation == "weak":
        code = proc.returncode
    elif "exit" in status:
        code = status["exit"]
    else:
        raise SandboxError(f"launcher exited {proc.returncode} without reporting the program")
    decode = lambda b: b.decode("utf-8", "replace")
    return RunResult(decode(out), decode(err), code, timed_out, truncated, wall_s, isolation)


def _collect(proc: subprocess.Popen, cfg: SandboxConfig, deadline: float):
    """Read stdout/stderr up to the cap until the launcher exits (then drain briefly) or the
    deadline passes. Returns (stdout, stderr, truncated, timed_out).

    A stream past its cap is closed, as `| head -c` would: a program spewing output then stops
    early instead of costing the parent CPU until the timeout.
    """
    out_fd, err_fd = proc.stdout.fileno(), proc.stderr.fileno()
    bufs = {out_fd: bytearray(), err_fd: bytearray()}
    streams = {out_fd: proc.stdout, err_fd: proc.stderr}
    pidfd = os.pidfd_open(proc.pid)
    truncated, exited, end = False, False, deadline
    try:
        with selectors.DefaultSelector() as sel:
            for fd in (out_fd, err_fd, pidfd):
                sel.register(fd, selectors.EVENT_READ)
            while not exited or len(sel.get_map()) > 0:
                remaining = end - time.monotonic()
                if remaining <= 0:
                    break
                for key, _ in sel.select(remaining):
                    if key.fd == pidfd:  # the launcher exited: stray writers get a moment
                        sel.unregister(pidfd)
                        exited, end = True, min(deadline, time.monotonic() + _DRAIN_S)
                        continue
                    chunk = os.read(key.fd, 1 << 16)
                    buf = bufs[key.fd]
                    room = cfg.max_output_bytes - len(buf)
                    buf += chunk[:room]
                    if not chunk or len(chunk) > room:
                        truncated |= len(chunk) > room
                        sel.unregister(key.fd)
                        streams[key.fd].close()
    finally:
        os.close(pidfd)
        for stream in streams.values():
            stream.close()
    return bytes(bufs[out_fd]), bytes(bufs[err_fd]), truncated, not exited


def _read_status(fd: int) -> dict:
    """The launcher's and init's report lines, merged; never blocks."""
    os.set_blocking(fd, False)
    data = b""
    with contextlib.suppress(BlockingIOError):
        while chunk := os.read(fd, 1 << 16):
            data += chunk
    status = {}
    for line in data.splitlines():
        try:
            status.update(json.loads(line))
        except ValueError:
            status["error"] = f"bad launcher status line: {line[:200]!r}"
    return status
