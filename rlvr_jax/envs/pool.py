"""Many concurrent episodes' environments in worker processes, with a wall-clock limit per step.

An episode is pinned to one worker, which runs its episodes' calls one at a time; workers run in
parallel. An environment that raises ends its episode with `base.env_error` (the traceback's tail);
a call past `timeout_s`, or a worker that dies (segfault, os._exit, out of memory), gets the worker
SIGKILLed and replaced, and every episode it hosted ends with `env_error`. The caller never sees an
environment's exception. Workers are forkserver (or spawn) children, never plain forks of the
parent, which runs JAX threads; like `rewards.pool`, each re-imports the caller's `__main__`.
"""

from __future__ import annotations

import collections
import dataclasses
import importlib
import itertools
import multiprocessing
import multiprocessing.connection
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from rlvr_jax.envs import base
from rlvr_jax.rewards import pool as rewards_pool

START_TIMEOUT_S = 120.0  # worker start-up; not charged to any episode
BUILD_TIMEOUT_S = 120.0  # default limit on building one environment (a catalog, say)
_TRACE_CHARS = 2000  # how much of a traceback an env_error keeps


@dataclasses.dataclass(frozen=True)
class EnvSpec:
    """How a worker builds an environment: an importable factory and its (picklable) kwargs."""

    factory: str  # "module.path:function", e.g. "rlvr_jax.envs.ecom.envs:make_env"
    kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)

    def key(self) -> tuple[str, str]:
        """Equal specs, equal keys (the dict makes the dataclass itself unhashable)."""
        return self.factory, repr(sorted(self.kwargs.items()))

    def build(self) -> base.Environment:
        module, _, fn = self.factory.partition(":")
        return getattr(importlib.import_module(module), fn)(**self.kwargs)


def _error_tail() -> str:
    return traceback.format_exc(limit=-8)[-_TRACE_CHARS:]


class _Host:
    """The environments of one worker (or of the caller, with workers=0).

    Environment objects are kept per EnvSpec and reused: an episode that ends (done, or closed)
    returns its object to the spec's idle list, and the next episode of that spec calls `reset` on
    it (the interface's contract: a new reset starts the next episode). An object whose call raised
    is dropped, its state unknown. So a host builds at most as many objects per spec as it has
    live episodes of that spec at once.
    """

    def __init__(self, catch: type[BaseException]):
        self._catch = catch
        self._idle: dict[tuple, list[base.Environment]] = collections.defaultdict(list)
        self._live: dict[int, tuple[tuple, base.Environment]] = {}

    def reset(
        self, eid: int, spec: EnvSpec, seed: int, difficulty: int, built: Callable | None = None
    ) -> base.Step:
        key = spec.key()
        try:
            env = self._idle[key].pop() if self._idle[key] else spec.build()
        except self._catch:
            return base.env_error(f"building {spec.factory}: {_error_tail()}")
        if built is not None:
            built()  # the reset itself now runs under the step limit
        try:
            first = list(env.reset(seed, difficulty))
        except self._catch:
            return base.env_error(_error_tail())
        self._live[eid] = (key, env)
        return base.Step(first)

    def step(self, eid: int, action: str) -> base.Step:
        return self._call(eid, lambda env: env.step(action))

    def finish(self, eid: int, reason: str) -> base.Step:
        step = self._call(eid, lambda env: env.finish(reason), end=True)
        return step if step.done else dataclasses.replace(step, done=True)

    def drop(self, eid: int) -> None:
        if eid in self._live:
            key, env = self._live.pop(eid)
            self._idle[key].append(env)

    def _call(self, eid: int, fn: Callable[..., base.Step], end: bool = False) -> base.Step:
        if eid not in self._live:
            return base.env_error(f"episode {eid} is not live in this worker")
        try:
            step = fn(self._live[eid][1])
            if not isinstance(step, base.Step):
                raise TypeError(f"the environment returned {type(step).__name__}, not a Step")
        except self._catch:
            del self._live[eid]
            return base.env_error(_error_tail())
        if step.done or end:
            self.drop(eid)
        return step


def _worker_main(conn, memory_limit_bytes: int | None, preload: tuple[str, ...], pdeathsig: bool):
    rewards_pool.worker_setup(memory_limit_bytes, preload, pdeathsig)
    host = _Host(BaseException)  # SystemExit, MemoryError...: the episode's error, not ours
    conn.send(("ok", None))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return  # the parent is gone
        except BaseException:  # noqa: BLE001 - unpickling failed (a spec's kwargs, say)
            conn.send(("step", base.env_error(_error_tail())))
            continue
        if msg is None:
            return
        op, eid, args = msg
        if op == "reset":
            out = host.reset(eid, *args, built=lambda: conn.send(("built", None)))
        else:
            out = getattr(host, op)(eid, *args)
        try:
            conn.send(("step", out))
        except Exception as e:  # noqa: BLE001 - pickling fails before any byte is written
            host.drop(eid)
            conn.send(("step", base.env_error(f"Step not picklable: {type(e).__name__}: {e}")))


class _Worker:
    """One worker process and the parent's end of its pipe."""

    def __init__(self, ctx, args: tuple):
        self.conn, child_conn = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child_conn, *args), daemon=True)
        self.proc.name = "env-worker"
        self.proc.start()
        child_conn.close()
        self.started = False
        self.start_deadline = time.monotonic() + START_TIMEOUT_S

    def exit_info(self) -> str:
        return rewards_pool.exit_info(self.proc)

    def kill(self):
        self.proc.kill()
        self.proc.join(5.0)  # one stuck in uninterruptible sleep is left behind, not awaited
        self.conn.close()


@dataclasses.dataclass
class _Episode:
    worker: _Worker | None  # None with workers=0
    hosted: bool = False  # its reset was sent: a worker death ends it
    final: base.Step | None = None  # set once the episode is over; answers every later call


@dataclasses.dataclass
class _InFlight:
    worker: _Worker
    index: int | None  # into the call's results; None while the worker starts up
    limit_s: float
    deadline: float
    building: bool = False  # a reset, still building its environment object


class EnvPool:
    """`workers` processes hosting episodes; every call returns one Step per episode, whatever
    happens in the environments.

    Ids: `reset` returns a new int id per episode, unique within the pool. An episode is over once
    a call returns a done Step for it (the environment ended it, `finish`, an exception, a timeout,
    or its worker dying); every later `step`/`finish` on it returns that same final Step without
    touching an environment. `close(ids)` forgets episodes (over or not); the pool keeps each
    episode's record until then. Unknown ids raise KeyError, duplicate ids in one call ValueError.

    Environment objects: a worker builds them with the spec's factory and reuses them, one per
    live episode: an ended or closed episode's object serves the spec's next episode after a new
    `reset` (so `reset` must start afresh); an object that raised is dropped.

    Limits: each reset, step and finish gets `timeout_s`; building an environment object (the
    factory call, before reset) gets `build_timeout_s`; worker start-up is not charged. With
    `workers=0` everything runs in the caller, with the same results and error handling except
    that nothing is timed (a hang hangs the caller, a crash kills it) and SystemExit and
    KeyboardInterrupt propagate: for tests and debugging. One caller at a time: calls from
    several threads are serialised.
    """

    def __init__(
        self,
        workers: int,
        timeout_s: float,
        *,
        build_timeout_s: float = BUILD_TIMEOUT_S,
        memory_limit_bytes: int | None = None,
        preload: Sequence[str] = (),
        start_method: str = "forkserver",
    ):
        if workers < 0 or timeout_s <= 0 or build_timeout_s <= 0:
            raise ValueError(f"need workers >= 0 and positive timeouts: {workers}, {timeout_s}")
        if start_method not in ("forkserver", "spawn"):
            raise ValueError(f"start_method must be forkserver or spawn, got {start_method!r}")
        self._timeout_s, self._build_timeout_s = timeout_s, build_timeout_s
        self._ids = itertools.count()
        self._episodes: dict[int, _Episode] = {}
        self._lock = threading.Lock()
        self._shut = False
        self._host = _Host(Exception) if workers == 0 else None
        self._ctx = multiprocessing.get_context(start_method)
        if start_method == "forkserver":
            # Replacements then fork from a server that has imported these (no-op once it runs).
            self._ctx.set_forkserver_preload([__name__, *preload])
        self._args = (memory_limit_bytes, tuple(preload), start_method == "forkserver")
        self._workers = [_Worker(self._ctx, self._args) for _ in range(workers)]

    def worker_pids(self) -> list[int]:
        """Process ids of the current workers (for monitoring and tests)."""
        return [w.proc.pid for w in self._workers]

    def reset(
        self, episodes: Sequence[tuple[EnvSpec, int, int]]
    ) -> tuple[list[int], list[base.Step]]:
        """Starts one episode per (spec, seed, difficulty): their ids, and first Steps (the
        reset's messages as the observation, not done; or a done env_error)."""
        with self._lock:
            if self._shut:
                raise RuntimeError("EnvPool is shut down")
            live = [ep.worker for ep in self._episodes.values() if ep.final is None]
            load = collections.Counter(live)
            ids, calls = [], []
            for spec, seed, difficulty in episodes:
                worker = None
                if self._workers:  # the least loaded, so a call's episodes spread out
                    worker = min(self._workers, key=lambda w: load[w])
                    load[worker] += 1
                eid = next(self._ids)
                self._episodes[eid] = _Episode(worker)
                ids.append(eid)
                calls.append((eid, "reset", (spec, seed, difficulty)))
            return ids, self._run(calls)

    def step(self, ids: Sequence[int], actions: Sequence[str]) -> list[base.Step]:
        """Each episode's answer to its assistant turn, run concurrently across workers."""
        if len(ids) != len(actions):
            raise ValueError(f"{len(ids)} ids but {len(actions)} actions")
        with self._lock:
            return self._run(
                [(eid, "step", (a,)) for eid, a in zip(self._check(ids), actions, strict=True)]
            )

    def finish(self, ids: Sequence[int], reason: str) -> list[base.Step]:
        """Ends episodes the rollout cut short: each one's final Step (done)."""
        with self._lock:
            return self._run([(eid, "finish", (reason,)) for eid in self._check(ids)])

    def close(self, ids: Sequence[int]) -> None:
        """Forgets episodes; live ones return their environment objects for reuse."""
        with self._lock:
            live = [
                (eid, "drop", ()) for eid in self._check(ids) if self._episodes[eid].final is None
            ]
            self._run(live)
            for eid in ids:
                del self._episodes[eid]

    def shutdown(self) -> None:
        """Kills every worker; the pool is unusable afterwards."""
        with self._lock:
            for worker in self._workers:
                worker.kill()
            self._workers, self._shut = [], True
            for ep in self._episodes.values():
                ep.final = ep.final or base.env_error("the pool was shut down")

    def __enter__(self) -> EnvPool:
        return self

    def __exit__(self, *exc_info):
        self.shutdown()

    def _check(self, ids: Sequence[int]) -> Sequence[int]:
        if len(set(ids)) != len(ids):
            raise ValueError(f"duplicate episode ids: {list(ids)}")
        for eid in ids:
            if eid not in self._episodes:
                raise KeyError(f"no episode {eid} (never started, or closed)")
        return ids

    def _record(self, eid: int, step: base.Step | None) -> base.Step | None:
        if step is not None and step.done:
            self._episodes[eid].final = step
        return step

    def _run(self, calls: list[tuple[int, str, tuple]]) -> list[Any]:
        """Runs (episode id, op, args) calls: in order per worker, workers in parallel."""
        results: list[Any] = [None] * len(calls)
        if self._host is not None:
            for i, (eid, op, args) in enumerate(calls):
                if (final := self._episodes[eid].final) is not None:
                    results[i] = final
                else:
                    results[i] = self._record(eid, getattr(self._host, op)(eid, *args))
            return results
        todo: dict[_Worker, collections.deque[int]] = collections.defaultdict(collections.deque)
        for i, (eid, _, _) in enumerate(calls):
            todo[self._episodes[eid].worker].append(i)
        busy: dict[Any, _InFlight] = {}  # conn -> the call it runs
        try:
            while todo or busy:
                self._dispatch(calls, results, todo, busy)
                if not busy:
                    continue
                wait_s = max(0.0, min(f.deadline for f in busy.values()) - time.monotonic())
                for conn in multiprocessing.connection.wait(list(busy), wait_s):
                    self._receive(calls, results, todo, busy, conn)
                now = time.monotonic()
                for conn, f in list(busy.items()):
                    if now < f.deadline:
                        continue
                    del busy[conn]
                    if f.index is None:
                        self._replace(f.worker, todo, "no worker start-up")
                        raise RuntimeError(f"env worker: no start-up within {START_TIMEOUT_S}s")
                    eid, op, _ = calls[f.index]
                    what = "building the environment" if f.building else op
                    why = f"{what} of episode {eid}: timeout after {f.limit_s:g} s; worker killed"
                    self._replace(f.worker, todo, why)
                    results[f.index] = self._episodes[eid].final
        finally:
            for f in busy.values():  # interrupted: a late answer must never reach a later call
                self._replace(f.worker, todo, "the pool call was interrupted")
        return results

    def _dispatch(self, calls, results, todo, busy):
        """Sends each idle worker its next call; answers calls on episodes already over."""
        running = {f.worker for f in busy.values()}
        for worker in list(todo):
            queue = todo[worker]
            while worker not in running and queue:
                if not worker.started:
                    start = _InFlight(worker, None, START_TIMEOUT_S, worker.start_deadline)
                    busy[worker.conn] = start
                    running.add(worker)
                    break
                i = queue[0]
                eid, op, args = calls[i]
                ep = self._episodes[eid]
                if ep.final is not None:
                    queue.popleft()
                    results[i] = ep.final
                    continue
                try:
                    worker.conn.send((op, eid, args))
                except (OSError, EOFError):  # it died between calls
                    self._replace(worker, todo, f"worker died: {worker.exit_info()}")
                    break
                except Exception as e:  # noqa: BLE001 - pickling fails before any byte is sent
                    queue.popleft()
                    results[i] = self._record(eid, base.env_error(f"not picklable: {e!r}"))
                    continue
                queue.popleft()
                ep.hosted = ep.hosted or op == "reset"
                limit = self._build_timeout_s if op == "reset" else self._timeout_s
                busy[worker.conn] = _InFlight(
                    worker, i, limit, time.monotonic() + limit, building=op == "reset"
                )
                running.add(worker)
            if not queue:
                todo.pop(worker, None)

    def _receive(self, calls, results, todo, busy, conn):
        f = busy[conn]
        try:
            kind, payload = conn.recv()
        except (EOFError, OSError):  # segfault, os._exit, OOM kill
            del busy[conn]
            info = f.worker.exit_info()
            if f.index is None:
                self._replace(f.worker, todo, "no worker start-up")
                raise RuntimeError(f"env worker died at start-up: {info}") from None
            eid, op, _ = calls[f.index]
            self._replace(f.worker, todo, f"{op} of episode {eid}: worker died ({info})")
            results[f.index] = self._episodes[eid].final
            return
        except Exception as e:  # noqa: BLE001 - the Step does not unpickle here
            kind, payload = "step", base.env_error(f"Step not unpicklable: {e!r}")
        if kind == "ok":  # started
            f.worker.started = True
            del busy[conn]
        elif kind == "built":  # the environment object exists; its reset is a step
            f.limit_s, f.deadline = self._timeout_s, time.monotonic() + self._timeout_s
            f.building = False
        else:
            del busy[conn]
            results[f.index] = self._record(calls[f.index][0], payload)

    def _replace(self, worker: _Worker, todo, message: str):
        """Kills `worker`; its episodes end with env_error; resets not yet sent move on to the
        replacement."""
        worker.kill()
        new = _Worker(self._ctx, self._args)
        self._workers[self._workers.index(worker)] = new
        for ep in self._episodes.values():
            if ep.worker is worker:
                if ep.hosted:
                    ep.final = ep.final or base.env_error(message)
                else:
                    ep.worker = new
        if worker in todo:  # calls on ended episodes are answered by _dispatch from `final`
            todo[new].extend(todo.pop(worker))
