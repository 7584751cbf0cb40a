"""EnvPool tests: worker results equal in-process ones, and an environment that raises, hangs or
kills its worker ends its episodes with env_error while the pool goes on serving the others."""

import time

import psutil
import pytest

from rlvr_jax.envs import base
from rlvr_jax.envs import pool as pool_lib
from tests import envs_fixtures as fx

EPISODES = [(fx.spec(), seed, difficulty) for seed in range(4) for difficulty in (1, 3)]


def _error(step: base.Step) -> str:
    assert step.done and step.reward == 0.0 and step.info["status"] == "env_error", step
    return step.info["error"]


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_workers_match_in_process_and_are_deterministic():
    with pool_lib.EnvPool(0, timeout_s=5.0) as pool:
        local = fx.play(pool, EPISODES)
    with pool_lib.EnvPool(2, timeout_s=5.0) as pool:
        remote = fx.play(pool, EPISODES)
        again = fx.play(pool, EPISODES)
        other = fx.play(pool, [(s, seed + 10, d) for s, seed, d in EPISODES])
    assert remote == local == again
    assert [len(ep) for ep in local] == [1 + d for _, _, d in EPISODES]  # reset + d steps
    assert all(
        ep[-1].done and ep[-1].reward == 1.0 and ep[-1].info["status"] == "ok" for ep in local
    )
    assert all(not s.done for ep in local for s in ep[:-1])
    assert other != local  # other seeds, other episodes


def test_episodes_spread_over_workers_and_reuse_environments():
    with pool_lib.EnvPool(2, timeout_s=5.0) as pool:
        ids, _ = pool.reset([(fx.spec(), seed, 2) for seed in range(4)])
        steps = pool.step(ids, ["x"] * 4)
        assert len({s.info["pid"] for s in steps}) == 2
        assert {s.info["builds"] for s in steps} == {2}  # two live episodes per worker
        pool.close(ids)  # live episodes: their objects go back for reuse
        ids, _ = pool.reset([(fx.spec(), seed, 2) for seed in range(4)])
        assert {s.info["builds"] for s in pool.step(ids, ["x"] * 4)} == {2}
        other = pool.reset([(fx.spec(trap_step=99), 0, 2)] * 2)[0]  # another spec: new objects
        assert {s.info["builds"] for s in pool.step(other, ["x"] * 2)} == {3}


@pytest.mark.parametrize("workers", [0, 2])
def test_raising_environment_ends_only_its_episode(workers):
    with pool_lib.EnvPool(workers, timeout_s=5.0) as pool:
        ids, firsts = pool.reset(
            [
                (fx.spec(), 0, 3),
                (fx.spec(trap_step=2), 1, 3),
                (fx.spec(trap_reset="raise"), 2, 3),
                (fx.spec(name="not_step"), 3, 3),
                (fx.spec(name="no_such_env"), 4, 3),
                (pool_lib.EnvSpec("tests.no_such_module:make_env", {}), 5, 3),
            ]
        )
        assert not firsts[0].done and not firsts[1].done and not firsts[3].done
        assert "KeyError: 'raised on purpose'" in _error(firsts[2])
        assert "unknown fixture env 'no_such_env'" in _error(firsts[4])
        assert "No module named 'tests.no_such_module'" in _error(firsts[5])
        first = pool.step(ids, ["a"] * 6)
        assert not first[0].done and not first[1].done
        assert "not a Step" in _error(first[3])
        assert first[2] == firsts[2] and first[4] == firsts[4]  # over: the same final Step
        second = pool.step(ids[:2], ["a", "a"])
        assert not second[0].done
        assert "ValueError: trap on step 2" in _error(second[1])
        assert pool.step(ids[1:2], ["a"]) == [second[1]]
        finished = pool.finish(ids[:2], "budget")
        assert finished[0].done and finished[0].info["status"] == "truncated"
        assert finished == [pool.finish(ids[:1], "x")[0], second[1]]
        ids, _ = pool.reset([(fx.spec(), 0, 3)])
        assert "raised on purpose" in _error(pool.finish(ids, "raise")[0])


@pytest.mark.parametrize("trap", ["hang", "exit", "segfault"])
def test_hang_or_crash_ends_the_workers_episodes_only(trap):
    with pool_lib.EnvPool(2, timeout_s=1.0) as pool:
        ids, _ = pool.reset([(fx.spec(), seed, 5) for seed in range(4)])
        pids = {s.info["pid"] for s in pool.step(ids, ["x"] * 4)}
        start = time.monotonic()
        steps = pool.step(ids, [trap, "x", "x", "x"])
        elapsed = time.monotonic() - start
        assert elapsed < 5.0
        if trap == "hang":
            assert elapsed >= 1.0
            assert "step of episode 0: timeout after 1 s" in _error(steps[0])
        else:
            why = "exit code 3" if trap == "exit" else "killed by SIGSEGV"
            assert f"step of episode 0: worker died ({why})" in _error(steps[0])
        assert steps[2] == steps[0]  # episode 2 shared episode 0's worker
        assert not steps[1].done and not steps[3].done
        survivor = steps[1].info["pid"]
        (killed,) = pids - {survivor}
        assert not _alive(killed)
        assert sorted(pool.worker_pids()) != sorted(pids) and survivor in pool.worker_pids()
        assert pool.step(ids, ["x"] * 4)[0] == steps[0]  # ended episodes stay ended
        assert [ep[-1].reward for ep in fx.play(pool, EPISODES)] == [1.0] * len(EPISODES)


def test_hanging_reset_times_out_and_queued_resets_move_to_the_replacement():
    with pool_lib.EnvPool(1, timeout_s=1.0) as pool:
        ids, firsts = pool.reset([(fx.spec(trap_reset="hang"), 0, 2), (fx.spec(), 1, 2)])
        assert "reset of episode 0: timeout after 1 s" in _error(firsts[0])
        assert not firsts[1].done
        assert not pool.step(ids[1:], ["x"])[0].done


def test_building_gets_its_own_limit():
    with pool_lib.EnvPool(1, timeout_s=0.5, build_timeout_s=10.0) as pool:
        ids, firsts = pool.reset([(fx.spec(name="slow_build", build_s=1.0), 0, 2)])
        assert not firsts[0].done
    with pool_lib.EnvPool(1, timeout_s=10.0, build_timeout_s=0.5) as pool:
        ids, firsts = pool.reset([(fx.spec(name="slow_build", build_s=5.0), 0, 2)])
        assert "building the environment of episode 0: timeout after 0.5 s" in _error(firsts[0])


def test_ids_are_checked_and_shutdown_kills_workers():
    pool = pool_lib.EnvPool(2, timeout_s=5.0)
    ids, _ = pool.reset([(fx.spec(), 0, 2)])
    with pytest.raises(ValueError, match="duplicate"):
        pool.step([ids[0], ids[0]], ["x", "x"])
    with pytest.raises(ValueError, match="actions"):
        pool.step(ids, [])
    pool.close(ids)
    with pytest.raises(KeyError):
        pool.step(ids, ["x"])
    ids, _ = pool.reset([(fx.spec(), 0, 2)])
    pids = pool.worker_pids()
    pool.shutdown()
    assert not any(_alive(p) for p in pids)
    assert "shut down" in _error(pool.step(ids, ["x"])[0])
    with pytest.raises(RuntimeError, match="shut down"):
        pool.reset([(fx.spec(), 0, 2)])
