"""The sandbox's trusted launcher: the script that sandbox.run_program starts for each run.

It runs as `python -I -S sandbox_launcher.py SPEC` (SPEC: JSON written by the parent),
single-threaded and on the standard library only: -I keeps this directory off sys.path, so no
module of the package is imported here, and no `preexec_fn` ever runs in the threaded trainer.

Process tree of a run: trainer -> launcher (creates the namespaces) -> init (PID 1 of the new
PID namespace: builds the root, then reaps) -> program. When the program exits, init exits and
the kernel kills whatever else is left in the namespace (setsid daemons, double forks). The
parent's SIGTERM makes the launcher SIGKILL init, and with it the namespace. The launcher and
init report to the parent as JSON lines on spec["status_fd"]: {"exit": code} or {"error": why}.
"""

import contextlib
import ctypes
import json
import os
import platform
import resource
import signal
import sys

_INNER_UID = 1000  # the program's uid inside the namespace when the trainer runs as root
_NOBODY = 65534  # ... and the host uid it maps to (root is exempt from RLIMIT_NPROC)
# -I minus -E (the env is ours and carries PYTHONHASHSEED), and -S; the -c bootstrap gives back
# the exit()/quit() that site would define (programs call them), without site's sys.path work.
_PROGRAM_FLAGS = ("-s", "-S", "-P")
_BOOTSTRAP = (
    "import site, sys; site.setquit(); del site; sys.argv[0] = __file__ = {main!r}; "
    "exec(compile(open(__file__, 'rb').read(), __file__, 'exec'))"
)
_PROGRAM_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
    "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONSAFEPATH": "1",
    "PYTHONIOENCODING": "utf-8", "OMP_NUM_THREADS": "1",
}  # fmt: skip
_DEVICES = ("null", "zero", "full", "random", "urandom")

_CLONE_NEWNS, _CLONE_NEWUTS, _CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
_CLONE_NEWUSER, _CLONE_NEWPID, _CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 1, 2, 4, 8
_MS_REMOUNT, _MS_BIND, _MS_REC, _MS_PRIVATE = 32, 4096, 16384, 1 << 18
_MNT_DETACH = 2
_PR_SET_PDEATHSIG, _PR_SET_DUMPABLE, _PR_CAPBSET_DROP = 1, 4, 24
_PR_SET_SECUREBITS, _PR_SET_NO_NEW_PRIVS, _PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL = 28, 38, 47, 4
# SECBIT_NOROOT(+locked): uid 0 gains no capabilities on exec; KEEP_CAPS locked off; ambient
# raise forbidden (+locked). NO_SETUID_FIXUP stays off, so a setuid away from 0 drops caps.
_SECUREBITS = 0x01 | 0x02 | 0x20 | 0x40 | 0x80
_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}


class _Libc:
    """The few syscalls Python 3.11's os module lacks, raising OSError like os does."""

    def __init__(self):
        self.lib = ctypes.CDLL(None, use_errno=True)
        self.lib.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_char_p]
        self.lib.prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4
        with open("/proc/sys/kernel/cap_last_cap") as f:  # read now: the sandbox has no /proc/sys
            self.last_cap = int(f.read())

    def _check(self, ret: int, what: str):
        if ret != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"{what}: {os.strerror(err)}")

    def mount(self, src, dst, fstype, flags: int, data=None):
        enc = lambda s: None if s is None else os.fsencode(s)
        ret = self.lib.mount(enc(src), enc(dst), enc(fstype), flags, enc(data))
        self._check(ret, f"mount {src} on {dst}")

    def umount(self, target: str):
        self._check(self.lib.umount2(os.fsencode(target), _MNT_DETACH), f"umount {target}")

    def prctl(self, option: int, arg: int = 0, arg3: int = 0):
        self._check(self.lib.prctl(option, arg, arg3, 0, 0), f"prctl {option}")

    def unshare(self, flags: int):
        self._check(self.lib.unshare(flags), "unshare")

    def pivot_root(self):
        number = _SYS_PIVOT_ROOT.get(platform.machine())
        if number is None:
            raise OSError(f"pivot_root: unknown syscall number on {platform.machine()}")
        self._check(self.lib.syscall(ctypes.c_long(number), b".", b"."), "pivot_root")

    def drop_capabilities(self):
        """Empty effective, permitted, inheritable, ambient and bounding sets."""
        self.prctl(_PR_SET_SECUREBITS, _SECUREBITS)
        for cap in range(self.last_cap + 1):
            self.prctl(_PR_CAPBSET_DROP, cap)
        self.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL)

    def clear_capabilities(self):
        header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this pid
        data = (ctypes.c_uint32 * 6)()
        self._check(self.lib.capset(header, data), "capset")


def _report(fd: int, **fields):
    os.write(fd, (json.dumps(fields) + "\n").encode())


def _exec_program(spec: dict, libc: _Libc, cwd: str, inner_uid: int | None, contain: bool):
    """In the program's process: limits, no capabilities, a clean env, then exec Python."""
    os.chdir(cwd)
    for sig in (signal.SIGINT, signal.SIGPIPE, signal.SIGXFSZ, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)
    for kind, soft, hard in spec["limits"]:
        resource.setrlimit(kind, (soft, hard))
    os.nice(spec["nice"])
    if contain:
        libc.drop_capabilities()
    if inner_uid is not None:
        os.setgroups([])
        os.setresgid(inner_uid, inner_uid, inner_uid)
        os.setresuid(inner_uid, inner_uid, inner_uid)
    if contain:
        libc.clear_capabilities()
    libc.prctl(_PR_SET_NO_NEW_PRIVS, 1)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    env = dict(_PROGRAM_ENV, HOME=cwd, TMPDIR=cwd)
    python, main = spec["python"], os.path.join(cwd, spec["program_file"])
    os.execve(python, [python, *_PROGRAM_FLAGS, "-c", _BOOTSTRAP.format(main=main)], env)


def _bind_ro(libc: _Libc, src: str, dst: str):
    libc.mount(src, dst, None, _MS_BIND)
    flags = _MS_REMOUNT | _MS_BIND | _MS_RDONLY | _MS_NOSUID | _MS_NODEV
    if os.statvfs(dst).f_flag & os.ST_NOEXEC:
        flags |= _MS_NOEXEC  # a locked flag of the host mount must be kept
    libc.mount(None, dst, None, flags)


def _build_root(spec: dict, libc: _Libc, files: dict[str, bytes], inner_uid: int | None):
    """Mount the sandbox's filesystem on the staging directory, then pivot into it."""
    root, cwd = spec["dir"], spec["cwd"]
    libc.mount(None, "/", None, _MS_REC | _MS_PRIVATE)
    libc.mount("tmpfs", root, "tmpfs", _MS_NOSUID | _MS_NODEV, "size=4m,nr_inodes=4096,mode=755")
    for kind, path, target in spec["binds"]:
        dst = root + path
        os.makedirs(os.path.dirname(dst), mode=0o755, exist_ok=True)
        if kind == "symlink":
            os.symlink(target, dst)
        elif kind == "dir":
            os.makedirs(dst, mode=0o755, exist_ok=True)
            _bind_ro(libc, path, dst)
        else:
            open(dst, "x").close()
            _bind_ro(libc, path, dst)
    dev = root + "/dev"
    os.mkdir(dev, 0o755)
    libc.mount("tmpfs", dev, "tmpfs", _MS_NOSUID | _MS_NOEXEC, "size=64k,mode=755")
    for name in _DEVICES:
        open(f"{dev}/{name}", "x").close()
        libc.mount(f"/dev/{name}", f"{dev}/{name}", None, _MS_BIND)
    for name, target in (("fd", "/proc/self/fd"), ("shm", cwd)):
        os.symlink(target, f"{dev}/{name}")
    for i, name in enumerate(("stdin", "stdout", "stderr")):
        os.symlink(f"/proc/self/fd/{i}", f"{dev}/{name}")
    # A full proc first, to forbid nested user namespaces (a way back to mount rights and
    # unbounded tmpfs); the program then sees only the processes part.
    proc = root + "/proc"
    os.mkdir(proc, 0o555)
    proc_flags = _MS_NOSUID | _MS_NODEV | _MS_NOEXEC
    libc.mount("proc", proc, "proc", proc_flags)
    with open(f"{proc}/sys/user/max_user_namespaces", "w") as f:
        f.write("0")
    libc.umount(proc)
    try:
        libc.mount("proc", proc, "proc", proc_flags, "subset=pid")
    except OSError:
        libc.mount("proc", proc, "proc", proc_flags)
    work = root + cwd
    os.mkdir(work, 0o755)
    owner = "" if inner_uid is None else f",uid={inner_uid},gid={inner_uid}"
    size = f"size={spec['scratch_mb']}m,nr_inodes=8192,mode=755{owner}"
    libc.mount("tmpfs", work, "tmpfs", _MS_NOSUID | _MS_NODEV, size)
    for name, data in files.items():
        path = f"{work}/{name}"
        with open(path, "wb") as f:
            f.write(data)
        if inner_uid is not None:
            os.chown(path, inner_uid, inner_uid)
    os.symlink(cwd, root + "/tmp")
    os.chdir(root)
    libc.pivot_root()
    libc.umount(".")  # the old root, stacked on top of the new one by pivot_root(".", ".")
    os.chdir("/")
    for path in ("/", "/dev"):
        libc.mount(None, path, None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY | _MS_NOSUID | _MS_NODEV)


def _init_main(spec: dict, libc: _Libc, files: dict[str, bytes], inner_uid: int | None):
    """PID 1 of the new namespace: build the root, run the program, report how it ended."""
    fd = spec["status_fd"]
    try:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Python's handler would make init mortal
        _build_root(spec, libc, files, inner_uid)
        libc.prctl(_PR_SET_DUMPABLE, 0)  # the program may not ptrace or read /proc/1/*
        pid = os.fork()
        if pid == 0:
            try:
                _exec_program(spec, libc, spec["cwd"], inner_uid, contain=True)
            except BaseException as e:  # noqa: BLE001 - reported, then this child exits
                _report(fd, error=f"program setup: {type(e).__name__}: {e}")
            os._exit(127)
        while True:  # reap orphans too; the program's exit ends the namespace
            child, status = os.waitpid(-1, 0)
            if child == pid:
                break
        _report(fd, exit=os.waitstatus_to_exitcode(status))
    except BaseException as e:  # noqa: BLE001 - every failure is reported to the parent
        _report(fd, error=f"sandbox setup: {type(e).__name__}: {e}")
        os._exit(1)
    os._exit(0)


def _map_ids_as_root(libc: _Libc):
    """As host root: unshare, and have a helper outside map ns 0 -> 0, _INNER_UID -> nobody."""
    r, w = os.pipe()
    helper = os.fork()
    if helper == 0:
        os.close(w)
        ok = os.read(r, 1) == b"u"
        try:
            for name in ("uid_map", "gid_map"):
                with open(f"/proc/{os.getppid()}/{name}", "w") as f:
                    f.write(f"0 0 1\n{_INNER_UID} {_NOBODY} 1\n")
        except OSError:
            ok = False
        os._exit(0 if ok else 1)
    os.close(r)
    try:
        libc.unshare(_NAMESPACES)
        os.write(w, b"u")
    finally:
        os.close(w)
        _, status = os.waitpid(helper, 0)
    if status != 0:
        raise OSError("writing the uid/gid maps failed")


_NAMESPACES = (
    _CLONE_NEWUSER | _CLONE_NEWNS | _CLONE_NEWPID | _CLONE_NEWNET | _CLONE_NEWIPC | _CLONE_NEWUTS
)


def _launch(spec: dict):
    """The launcher: read the staged files, create the namespaces, fork PID 1, wait for it."""
    fd = spec["status_fd"]
    os.set_inheritable(fd, False)
    libc = _Libc()
    try:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)  # die with the trainer's thread
        if os.getppid() != spec["parent"]:
            os._exit(1)
        if spec["isolation"] == "weak":
            _exec_program(spec, libc, spec["dir"], None, contain=False)
        files = {}
        for name in os.listdir(spec["dir"]):
            with open(os.path.join(spec["dir"], name), "rb") as f:
                files[name] = f.read()
        inner_uid = None
        if os.geteuid() == 0:
            _map_ids_as_root(libc)
            inner_uid = _INNER_UID
        else:
            uid, gid = os.geteuid(), os.getegid()
            libc.unshare(_NAMESPACES)
            maps = {"setgroups": "deny", "uid_map": f"0 {uid} 1", "gid_map": f"0 {gid} 1"}
            for name, line in maps.items():  # in this order: gid_map needs setgroups denied
                with open(f"/proc/self/{name}", "w") as f:
                    f.write(line)
        pid1 = os.fork()
        if pid1 == 0:
            _init_main(spec, libc, files, inner_uid)
        pidfd = os.pidfd_open(pid1)  # unlike the pid, never names another process once reaped

        def kill_namespace(*_):  # the parent's SIGTERM: PID 1 takes the whole namespace along
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)

        signal.signal(signal.SIGTERM, kill_namespace)
        os.waitpid(pid1, 0)
    except BaseException as e:  # noqa: BLE001 - every failure is reported to the parent
        _report(fd, error=f"launcher: {type(e).__name__}: {e}")
        os._exit(1)
    os._exit(0)


if __name__ == "__main__":
    _launch(json.loads(sys.argv[1]))
