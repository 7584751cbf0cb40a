"""Shared by the sandbox tests: the host's secret, the embedded tasks, and the check that no
process (a test's descendant, or an orphan that looks sandboxed) outlives a program."""

import os
import threading
import time

import psutil

from rlvr_jax.data import code_tasks_embedded
from rlvr_jax.rewards import sandbox

SECRET_ENV = "RLVR_SANDBOX_TEST_SECRET"
TASKS = {t.uid: t for t in code_tasks_embedded.embedded_tasks()}


def procs() -> set:
    """The (pid, create time) of every process now running."""
    return {(p.pid, p.info["create_time"]) for p in psutil.process_iter(["create_time"])}


def leftovers(before: set) -> list[str]:
    """New processes that are this test's descendants, or orphans that look sandboxed: from
    another PID namespace, of the sandbox's host uid (nobody, when tests run as root), or
    running the sandbox's bootstrap."""
    mine = {p.pid for p in psutil.Process().children(recursive=True)}
    host_ns = os.readlink("/proc/self/ns/pid")
    out = []
    for p in psutil.process_iter(["ppid", "create_time", "status", "cmdline", "uids"]):
        if (p.pid, p.info["create_time"]) in before or p.info["uids"] is None:
            continue
        try:
            foreign = os.readlink(f"/proc/{p.pid}/ns/pid") != host_ns
        except OSError:
            continue
        sandboxed = foreign or p.info["uids"].real == 65534
        sandboxed |= f"/{sandbox.PROGRAM_FILE}" in " ".join(p.info["cmdline"] or ())
        orphan = p.info["ppid"] == 1 and p.info["status"] != psutil.STATUS_ZOMBIE
        if p.pid in mine or (orphan and sandboxed):
            out.append(f"{p.pid} {p.info['status']} {p.info['cmdline']}")
    return out


def wait_no_leftovers(before: set, timeout_s: float = 3.0) -> list[str]:
    """The leftovers still there after up to `timeout_s` of waiting for them to go."""
    end = time.monotonic() + timeout_s
    while (left := leftovers(before)) and time.monotonic() < end:
        time.sleep(0.05)
    return left


def pipe_fds() -> set[str]:
    """This process's open pipes and sockets (what a leaked program handle would be), by target.

    Regular files are left out: other code in the same test worker opens and closes those."""
    out = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(("pipe:", "socket:")):
            out.add(target)
    return out


def pool_threads(prefix: str = "code-verifier", timeout_s: float = 3.0) -> list[str]:
    """The verifier pool's threads still alive after up to `timeout_s` of waiting for them to end.

    Counted by name rather than from /proc/self/task: XLA and other tests in the same worker
    start native threads of their own at any time, which made a process-wide count flaky."""
    end = time.monotonic() + timeout_s
    while (alive := [t.name for t in threading.enumerate() if t.name.startswith(prefix)]) and (
        time.monotonic() < end
    ):
        time.sleep(0.05)
    return alive
