"""OpenEnvAdapter on a small environment written with openenv-core's own base classes, in-process
and in EnvPool workers (skipped when openenv-core is not installed)."""

import random

import pytest

pytest.importorskip("openenv.core.env_server.interfaces")

from openenv.core.env_server import interfaces, types  # noqa: E402

from rlvr_jax.envs import openenv as openenv_lib  # noqa: E402
from rlvr_jax.envs import pool as pool_lib  # noqa: E402


class GuessAction(types.Action):
    guess: int


class GuessObservation(types.Observation):
    feedback: str


class GuessEnv(interfaces.Environment):
    """Guess a seeded number in [0, 10 * difficulty): "higher"/"lower" until found.
    A wrong guess costs 0.1, the right one earns 1 (per-step rewards, as OpenEnv has them)."""

    def reset(self, seed=None, episode_id=None, difficulty: int = 1, **kwargs):
        self._target = random.Random(seed).randrange(10 * difficulty)
        self._state = types.State(episode_id=episode_id, step_count=0)
        return GuessObservation(feedback=f"guess a number below {10 * difficulty}")

    def step(self, action, timeout_s=None, **kwargs):
        self._state.step_count += 1
        if action.guess < 0:
            raise RuntimeError("unlucky")
        if action.guess == self._target:
            return GuessObservation(feedback="yes", done=True, reward=1.0)
        feedback = "higher" if action.guess < self._target else "lower"
        return GuessObservation(feedback=feedback, reward=-0.1)

    @property
    def state(self):
        return self._state


def make_env(reward: str = "sum") -> openenv_lib.OpenEnvAdapter:
    """The EnvSpec factory: the adapter around a fresh GuessEnv."""
    return openenv_lib.OpenEnvAdapter(
        GuessEnv(),
        lambda text: GuessAction(guess=text.strip()),  # pydantic validates: "x" is a ValueError
        reward=reward,
        difficulty_kwarg="difficulty",
    )


def _bisect(env, seed: int, difficulty: int) -> list:
    """Plays an episode by bisection; its messages and Steps."""
    trace = [env.reset(seed, difficulty)]
    lo, hi = 0, 10 * difficulty
    while True:
        guess = (lo + hi) // 2
        step = env.step(str(guess))
        trace.append(step)
        if step.done:
            return trace
        if step.observation[0]["content"] == "higher":
            lo = guess + 1
        else:
            hi = guess


def test_adapter_plays_an_openenv_environment():
    trace = _bisect(make_env(), seed=3, difficulty=10)
    assert trace[0] == [{"role": "user", "content": "guess a number below 100"}]
    steps = trace[1:]
    assert all(s.observation[0]["content"] in ("higher", "lower") for s in steps[:-1])
    final = steps[-1]
    assert final.done and final.observation == []
    assert final.reward == pytest.approx(1.0 - 0.1 * (len(steps) - 1))
    assert final.info == {"status": "ok", "success": True, "steps": len(steps)}
    assert _bisect(make_env(), seed=3, difficulty=10) == trace  # deterministic by seed
    assert [_bisect(make_env(), seed, 10) != trace for seed in range(4, 8)].count(True) >= 3


def test_last_reward_invalid_action_and_finish():
    env = make_env(reward="last")
    assert _bisect(env, seed=3, difficulty=10)[-1].reward == 1.0
    env.reset(0, 10)
    step = env.step("seven")
    assert step.done and step.reward == 0.0 and step.info["status"] == "hard_fail"
    assert "guess" in step.info["error"]
    env = make_env()
    env.reset(0, 10)
    env.step("0" if env._env._target else "1")
    step = env.finish("turn budget")
    assert step.done and step.reward == pytest.approx(-0.1)
    assert step.info == {
        "status": "truncated",
        "success": False,
        "reason": "turn budget",
        "steps": 1,
    }


def test_render_falls_back_to_json():
    class Two(types.Observation):
        a: int
        b: str

    assert openenv_lib.render_observation(Two(a=1, b="x"), role="tool") == [
        {"role": "tool", "content": '{"a": 1, "b": "x"}'}
    ]


@pytest.mark.parametrize("workers", [0, 1])
def test_adapter_in_env_pool(workers):
    spec = pool_lib.EnvSpec("tests.envs_openenv_test:make_env", {})
    with pool_lib.EnvPool(workers, timeout_s=10.0) as pool:
        ids, firsts = pool.reset([(spec, 3, 10), (spec, 4, 10)])
        assert firsts[0].observation == _bisect(make_env(), 3, 10)[0]
        steps = pool.step(ids, ["-1", "x"])
        assert steps[0].info["status"] == "env_error" and "unlucky" in steps[0].info["error"]
        assert steps[1].info["status"] == "hard_fail"
