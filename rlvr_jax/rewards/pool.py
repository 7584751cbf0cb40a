"""A pool of verifier worker processes with a hard wall-clock limit per item.

An item still running at its deadline is SIGKILLed with its worker; a worker that crashes
(segfault, os._exit, out of memory) yields an error; either way the worker is replaced and the
caller gets one result per item. Workers are forkserver (or spawn) children, never plain forks
of the parent, which runs JAX threads. Each has its own pipe, so killing one never leaves a shared
queue locked, and an address-space limit. Like every spawn/forkserver child, a worker re-imports
the caller's `__main__` module: keep a script's work under `if __name__ == "__main__":`.
"""

import collections
import contextlib
import ctypes
import dataclasses
import importlib
import multiprocessing
import multiprocessing.connection
import os
import pickle
import queue
import resource
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from typing import Any

START_TIMEOUT_S = 120.0  # worker start-up plus importing `fn`'s module; not charged to items
_POLL_S = 0.05  # how often a map with undispatched items looks for workers other maps freed


@dataclasses.dataclass(frozen=True)
class PoolFailure:
    """An item's result when it timed out or errored and no factory was given."""

    kind: str  # "timeout" | "error"
    message: str


def _vm_bytes() -> int:
    with open("/proc/self/statm") as f:  # Linux
        return int(f.read().split()[0]) * resource.getpagesize()


def worker_setup(memory_limit_bytes: int | None, preload: tuple[str, ...], pdeathsig: bool):
    """A worker process's start: ignore Ctrl-C, no core files, die with the forkserver, import
    `preload`, then cap the address space at `memory_limit_bytes` above the start-up size (the
    caller's main module may have imported JAX). Shared with rlvr_jax/envs/pool.py."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the parent, which kills us
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a segfault leaves no core file
    if pdeathsig and sys.platform == "linux":
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: die with the forkserver
    for name in preload:
        importlib.import_module(name)
    if memory_limit_bytes is not None:
        limit = _vm_bytes() + memory_limit_bytes
        hard = resource.getrlimit(resource.RLIMIT_AS)[1]
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def exit_info(proc) -> str:
    """How a worker process ended ("killed by SIGSEGV", "exit code 3"), after a short join."""
    proc.join(1.0)
    if (code := proc.exitcode) is not None and code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


def _worker_main(conn, memory_limit_bytes: int | None, preload: tuple[str, ...], pdeathsig: bool):
    worker_setup(memory_limit_bytes, preload, pdeathsig)
    conn.send(("ok", None))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return  # the parent is gone
        except BaseException:  # noqa: BLE001 - unpickling failed, e.g. fn's module does not import
            conn.send(("error", traceback.format_exc(limit=-5)[-4000:]))
            continue
        if msg is None:
            return
        op, fn, item = msg
        try:
            out = ("ok", fn(item) if op == "call" else None)
        except BaseException:  # noqa: BLE001 - SystemExit, MemoryError...: the item's error
            out = ("error", traceback.format_exc(limit=-5)[-4000:])
        try:
            conn.send(out)
        except Exception as e:  # noqa: BLE001 - pickling fails before any byte is written
            conn.send(("error", f"result not picklable: {type(e).__name__}"))


class _Worker:
    """One worker process and the parent's end of its pipe."""

    def __init__(self, ctx, args: tuple):
        self.conn, child_conn = ctx.Pipe()
        self.proc = ctx.Process(
            target=_worker_main, args=(child_conn, *args), daemon=True, name="verifier-worker"
        )
        self.proc.start()
        self.pid = self.proc.pid
        child_conn.close()
        self.started = False
        self.loaded = set()  # pickled fns whose modules this worker has imported
        self._lock = threading.Lock()
        self._dead = False

    def _expect(self, what: str):
        if not self.conn.poll(START_TIMEOUT_S):
            raise RuntimeError(f"verifier worker: no {what} within {START_TIMEOUT_S}s")
        try:
            status, payload = self.conn.recv()
        except (EOFError, OSError):
            raise RuntimeError(f"verifier worker died during {what}: {self.exit_info()}") from None
        if status != "ok":
            raise RuntimeError(f"verifier worker failed during {what}:\n{payload}")

    def prepare(self, fn: Callable, fn_key: bytes):
        """Wait for start-up, then import `fn`'s module, both outside any item's deadline."""
        if not self.started:
            self._expect("start-up")
            self.started = True
        if fn_key not in self.loaded:
            self.conn.send(("load", fn, None))
            self._expect(f"import of {fn!r}")
            self.loaded.add(fn_key)

    def exit_info(self) -> str:
        return exit_info(self.proc)

    def kill(self):
        """SIGKILL, reap, release the pipe; idempotent. Only the thread holding it calls this."""
        with self._lock:
            if self._dead:
                return
            self._dead = True
            self.proc.kill()
            self.proc.join(5.0)  # one stuck in uninterruptible sleep is left behind, not awaited
            self.conn.close()
            if self.proc.exitcode is not None:
                self.proc.close()


class VerifierPool:
    """`num_workers` processes; `map(fn, items)` returns one result per item, whatever happens.

    `fn` must be a picklable top-level function of one argument. A timed-out item gives
    `on_timeout(item)`, an item that raised or killed its worker `on_error(item, message)`, or a
    `PoolFailure` without the factory. Several threads may call `map` at once. `map` raises only
    when a worker cannot start or import `fn`'s module (a setup error), or after `close`.
    `preload` modules are imported at start-up (by the forkserver too, so replacements are cheap);
    each worker's address space may grow `memory_limit_bytes` past that size (None: no limit).
    """

    def __init__(
        self,
        num_workers: int,
        timeout_s: float,
        *,
        memory_limit_bytes: int | None = 2 << 30,
        preload: Sequence[str] = (),
        start_method: str = "forkserver",
    ):
        if num_workers < 1 or timeout_s <= 0:
            raise ValueError(f"need num_workers >= 1, timeout_s > 0: {num_workers}, {timeout_s}")
        if start_method not in ("forkserver", "spawn"):
            raise ValueError(f"start_method must be forkserver or spawn, got {start_method!r}")
        self._ctx = multiprocessing.get_context(start_method)
        if start_method == "forkserver":
            # Replacements then fork from a server that has imported these (no-op once it runs).
            self._ctx.set_forkserver_preload([__name__, *preload])
        self._args = (memory_limit_bytes, tuple(preload), start_method == "forkserver")
        self._timeout_s = timeout_s
        self._lock = threading.Lock()  # guards _workers, _closed and returns to _idle
        self._workers: set[_Worker] = set()
        self._idle: queue.SimpleQueue[_Worker] = queue.SimpleQueue()
        self._closed = False
        for _ in range(num_workers):
            self._idle.put(self._spawn())

    def _spawn(self) -> _Worker:
        worker = _Worker(self._ctx, self._args)
        self._workers.add(worker)
        return worker

    def _release(self, worker: _Worker):
        with self._lock:
            if not self._closed:
                self._idle.put(worker)
                return
        worker.kill()

    def _replace(self, worker: _Worker):
        worker.kill()
        with self._lock:
            self._workers.discard(worker)
            if not self._closed:
                self._idle.put(self._spawn())

    def worker_pids(self) -> list[int]:
        """Process ids of the current workers (for monitoring and tests)."""
        with self._lock:
            return [w.pid for w in self._workers]

    def map(
        self,
        fn: Callable[[Any], Any],
        items: Iterable[Any],
        *,
        on_timeout: Callable[[Any], Any] | None = None,
        on_error: Callable[[Any, str], Any] | None = None,
    ) -> list[Any]:
        """[fn(item) for item in items], run in the workers, each under the hard timeout."""
        items = list(items)
        fn_key = pickle.dumps(fn)  # fails here, in the caller, if fn is not picklable

        def fail(i: int, kind: str, message: str):
            if kind == "timeout" and on_timeout is not None:
                return on_timeout(items[i])
            if kind == "error" and on_error is not None:
                return on_error(items[i], message)
            return PoolFailure(kind, message)

        results: list[Any] = [None] * len(items)
        todo = collections.deque(range(len(items)))
        busy: dict[Any, tuple[_Worker, int, float]] = {}  # conn -> (worker, index, deadline)
        try:
            while todo or busy:
                if self._closed:
                    raise RuntimeError("VerifierPool is closed")
                while todo:  # dispatch; block for a worker only when nothing is in flight
                    try:
                        worker = (
                            self._idle.get(timeout=_POLL_S) if not busy else self._idle.get_nowait()
                        )
                    except queue.Empty:
                        break
                    try:
                        worker.prepare(fn, fn_key)
                    except (RuntimeError, OSError):
                        self._replace(worker)
                        raise
                    i = todo.popleft()
                    try:
                        payload = pickle.dumps(("call", fn, items[i]))
                    except Exception as e:  # noqa: BLE001 - this item's fault only
                        results[i] = fail(i, "error", f"item not picklable: {type(e).__name__}")
                        self._release(worker)
                        continue
                    try:
                        worker.conn.send_bytes(payload)
                    except OSError:
                        results[i] = fail(i, "error", f"worker died: {worker.exit_info()}")
                        self._replace(worker)
                        continue
                    busy[worker.conn] = (worker, i, time.monotonic() + self._timeout_s)
                if not busy:
                    continue
                wait_s = max(0.0, min(d for _, _, d in busy.values()) - time.monotonic())
                for conn in multiprocessing.connection.wait(
                    list(busy), min(wait_s, _POLL_S) if todo else wait_s
                ):
                    worker, i, _ = busy.pop(conn)
                    try:
                        status, payload = conn.recv()
                    except (EOFError, OSError):  # segfault, os._exit, OOM kill
                        results[i] = fail(i, "error", f"worker died: {worker.exit_info()}")
                        self._replace(worker)
                        continue
                    except Exception as e:  # noqa: BLE001 - the result does not unpickle here
                        status, payload = "error", f"result not unpicklable: {type(e).__name__}"
                    results[i] = payload if status == "ok" else fail(i, "error", payload)
                    self._release(worker)
                now = time.monotonic()
                for conn, (worker, i, deadline) in list(busy.items()):
                    if now >= deadline:
                        del busy[conn]
                        self._replace(worker)
                        results[i] = fail(i, "timeout", f"no result in {self._timeout_s}s; killed")
        finally:
            for worker, _, _ in busy.values():
                self._replace(worker)  # its late result must never reach the next caller
        return results

    def close(self):
        """Kill every worker; idle ones are reaped here, busy ones by the map that holds them."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            workers = list(self._workers)
            idle = set()
            while not self._idle.empty():
                idle.add(self._idle.get_nowait())
        for worker in workers:
            if worker in idle:
                worker.kill()
            else:  # the map holding it sees EOF, then reaps it; only signal from this thread
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, signal.SIGKILL)

    def __enter__(self) -> "VerifierPool":
        return self

    def __exit__(self, *exc_info):
        self.close()
