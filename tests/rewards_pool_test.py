"""Verifier pool tests: 1,000 adversarial completions, hard timeouts, crashing workers, concurrent
callers, and a close that leaves no worker process behind."""

import collections
import concurrent.futures
import ctypes
import multiprocessing
import os
import pickle
import random
import threading
import time

import psutil
import pytest

from rlvr_jax.rewards import math as math_lib
from rlvr_jax.rewards import pool as pool_lib

MATH_PRELOAD = ("rlvr_jax.rewards.math",)


def _work(item):
    """A top-level (picklable) test function: echo, or misbehave as the item says."""
    kind, arg = item
    if kind == "sleep":
        time.sleep(3600)
    elif kind == "spin":
        while True:
            pass
    elif kind == "exit":
        os._exit(7)
    elif kind == "segfault":
        ctypes.string_at(0)
    elif kind == "raise":
        raise ValueError(arg)
    elif kind == "alloc":
        return len(bytearray(arg))
    return arg * 2


def _is_mp_helper(proc: psutil.Process) -> bool:
    # multiprocessing's forkserver and resource tracker live as long as this process.
    cmd = " ".join(proc.cmdline())
    return "multiprocessing.forkserver" in cmd or "multiprocessing.resource_tracker" in cmd


def _live_workers() -> set[int]:
    """Pids of this process's descendants, other than multiprocessing's helpers."""
    pids = set()
    for proc in psutil.Process().children(recursive=True):
        try:
            if proc.status() != psutil.STATUS_ZOMBIE and not _is_mp_helper(proc):
                pids.add(proc.pid)
        except psutil.NoSuchProcess:
            pass
    return pids


def _assert_gone(pids, *, closed: bool = True):
    procs = []
    for pid in pids:
        try:
            procs.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=5)  # killed with SIGKILL: gone at once
    assert not alive
    assert not (closed and multiprocessing.active_children())


@pytest.fixture
def baseline():
    """Descendants that existed before the test (none are expected to remain after it)."""
    before = _live_workers()
    yield before
    assert _live_workers() <= before


def _adversarial(rng: random.Random, i: int) -> tuple[tuple[str, str], str | None]:
    """((completion, reference), the status it must get, or None if any status will do)."""
    n = rng.randrange(10**6)
    kind = i % 20
    if kind == 0:
        return (f"so \\boxed{{{n}}}", str(n)), "correct"
    if kind == 1:
        return (f"{n} + 0 = {n}\n#### {n}", f"steps\n#### {n}"), "correct"
    if kind == 2:
        return (f"\\boxed{{{rng.randrange(2, 9)}^{{9^{{9^{{9}}}}}}}}", "3"), "wrong"
    if kind == 3:
        return (f"\\boxed{{{rng.randrange(10**4, 10**6)}!}}", "3"), "wrong"
    if kind == 4:
        d = rng.randrange(21, 400)
        return ("\\boxed{" + "{" * d + "1" + "}" * d + "}", "1"), "wrong"
    if kind == 5:
        return (f"\\boxed{{{n}}} or \\boxed{{{n + 1}}}", str(n)), "hedged"
    if kind == 6:
        return ("\\boxed{" * rng.randrange(1, 14_000), "1"), "no_answer"  # all unclosed
    if kind == 7:
        return ("\\boxed{1}" * rng.randrange(2, 5_000), "1"), "correct"  # one answer, repeated
    if kind == 8:
        return ("x" * rng.randrange(100_001, 3_000_000), "1"), "too_long"
    if kind == 9:
        return ("a" * 99_000 + f"\\boxed{{{n}}}", str(n)), "correct"
    if kind == 10:
        text = "".join(rng.choice("{}\\^!$#%()[]0123456789 boxed") for _ in range(20_000))
        return (text, "3"), None
    if kind == 11:
        return ("answer: " * 10_000 + "####" * 5_000, "3"), None
    if kind == 12:
        return (f"\\boxed{{(x+y+1)^{{{rng.randrange(25, 10_000)}}}}}", "x^2"), "wrong"
    if kind == 13:
        return (f"\\boxed{{\\binom{{{n * 10 + 10**5}}}{{{n}}}}}", "3"), "wrong"
    if kind == 14:
        return (f"\\boxed{{{n}\\%}}", str(n)), "wrong"
    if kind == 15:
        text = "".join(chr(rng.randrange(0x20, 0x3000)) for _ in range(5_000))
        return (text + "\\boxed{\u2212" + str(n) + "}", str(-n)), "correct"
    if kind == 16:
        return ("\\boxed{\\text{" + "a" * rng.randrange(1_000, 5_000) + "}}", "a"), "too_long"
    if kind == 17:
        return (f"\\boxed{{\\frac{{\\sqrt{{{n}}}}}{{2}} + x}}", f"x + \\sqrt{{{n}}}/2"), "correct"
    if kind == 18:
        return ("\\boxed{" + "\\frac{" * 40 + "1" + "}{2}" * 40 + "}", "1"), "wrong"
    return ("\0\x1b[31m" * 1_000 + f"Answer: {n}", str(n)), "correct"


def test_thousand_adversarial_completions(baseline):
    rng = random.Random(0)
    cases = [_adversarial(rng, i) for i in range(1_000)]
    items = [c[0] for c in cases]
    with pool_lib.VerifierPool(2, timeout_s=20.0, preload=MATH_PRELOAD) as pool:
        pids = pool.worker_pids()
        start = time.perf_counter()
        verdicts = pool.map(
            math_lib.score_math_item,
            items,
            on_timeout=math_lib.timeout_verdict,
            on_error=math_lib.error_verdict,
        )
        wall_s = time.perf_counter() - start
        pids += pool.worker_pids()
    counts = collections.Counter(v.status for v in verdicts)
    print(f"\n1,000 adversarial completions: {wall_s:.2f} s wall on 2 workers; {dict(counts)}")
    assert len(verdicts) == len(items)
    assert all(isinstance(v, math_lib.MathVerdict) for v in verdicts)
    assert set(counts) <= set(math_lib.STATUSES)
    for i, ((_, want), verdict) in enumerate(zip(cases, verdicts, strict=True)):
        assert want is None or verdict.status == want, (i, verdict)
    _assert_gone(pids)


def test_hung_items_time_out_and_workers_are_replaced(baseline):
    on_timeout = lambda item: ("timeout", item[0])
    with pool_lib.VerifierPool(2, timeout_s=1.0) as pool:
        old = set(pool.worker_pids())
        items = [("echo", 1), ("sleep", None), ("echo", 2), ("spin", None), ("echo", 3)]
        results = pool.map(_work, items, on_timeout=on_timeout)
        assert results == [2, ("timeout", "sleep"), 4, ("timeout", "spin"), 6]
        assert pool.map(_work, [("echo", 5)] * 4) == [10] * 4  # still serving
        new = set(pool.worker_pids())
        assert len(new) == 2 and new != old
        _assert_gone(old - new, closed=False)  # the hung workers were killed
    _assert_gone(old | new)


def test_default_failure_objects(baseline):
    with pool_lib.VerifierPool(1, timeout_s=0.5) as pool:
        failure = pool.map(_work, [("sleep", None)])[0]
    assert isinstance(failure, pool_lib.PoolFailure)
    assert failure.kind == "timeout"


def test_crashes_and_exceptions_are_errors(baseline):
    with pool_lib.VerifierPool(2, timeout_s=10.0) as pool:
        items = [("exit", None), ("segfault", None), ("raise", "boom"), ("echo", 3)]
        results = pool.map(_work, items)
        assert [getattr(r, "kind", None) for r in results] == ["error"] * 3 + [None]
        assert "exit code 7" in results[0].message
        assert "SIGSEGV" in results[1].message
        assert "ValueError: boom" in results[2].message
        assert results[3] == 6
        assert pool.map(_work, [("echo", i) for i in range(10)]) == [2 * i for i in range(10)]
        pids = pool.worker_pids()
    _assert_gone(pids)


def test_memory_limit(baseline):
    with pool_lib.VerifierPool(1, timeout_s=10.0, memory_limit_bytes=256 << 20) as pool:
        results = pool.map(_work, [("alloc", 4 << 30), ("alloc", 1 << 20)])
    assert results[0].kind == "error" and "MemoryError" in results[0].message
    assert results[1] == 1 << 20


def test_four_threads_share_the_pool(baseline):
    with pool_lib.VerifierPool(2, timeout_s=1.0) as pool:

        def call(t: int):
            items = [("echo", 1000 * t + i) for i in range(40)]
            items[7] = ("exit", None)  # every caller also kills a worker mid-way
            items[20] = ("sleep", None)
            return pool.map(_work, items, on_timeout=lambda _: "timeout", on_error=lambda *_: "err")

        with concurrent.futures.ThreadPoolExecutor(4) as ex:
            outs = list(ex.map(call, range(4)))
        for t, out in enumerate(outs):
            want = [2 * (1000 * t + i) for i in range(40)]
            want[7], want[20] = "err", "timeout"
            assert out == want
        pids = pool.worker_pids()
    _assert_gone(pids)


def test_close_while_a_map_is_running(baseline):
    pool = pool_lib.VerifierPool(2, timeout_s=60.0)
    pids = pool.worker_pids()
    outcome = []

    def run():
        try:
            outcome.append(pool.map(_work, [("sleep", None)] * 4))
        except RuntimeError as e:
            outcome.append(e)

    thread = threading.Thread(target=run)
    thread.start()
    time.sleep(1.0)  # both workers are now asleep on an item
    pool.close()
    thread.join(10)
    assert not thread.is_alive()
    assert isinstance(outcome[0], RuntimeError)
    _assert_gone(pids + pool.worker_pids())
    with pytest.raises(RuntimeError):
        pool.map(_work, [("echo", 1)])


def test_spawn_start_method_and_unpicklable_fn(baseline):
    with pool_lib.VerifierPool(1, timeout_s=30.0, start_method="spawn") as pool:
        assert pool.map(_work, [("echo", 21)]) == [42]
        with pytest.raises((pickle.PicklingError, AttributeError)):
            pool.map(lambda x: x, [1])
        pids = pool.worker_pids()
    _assert_gone(pids)
    with pytest.raises(ValueError):
        pool_lib.VerifierPool(1, 1.0, start_method="fork")
