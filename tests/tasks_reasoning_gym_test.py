"""The reasoning-gym task kind: splits, validation, scoring through the real verifier pool, and one
short run of the RL loop."""

import sys

import pytest

from experiments.configs import reasoning_gym as rg_config
from rlvr_jax import config as experiment
from rlvr_jax import tasks as tasks_lib
from rlvr_jax.errors import ConfigError
from rlvr_jax.tasks import reasoning_gym as rg_task
from rlvr_jax.train import metrics as metrics_lib
from rlvr_jax.train import run_config
from tests.loop_test import SMALL

pytest.importorskip("reasoning_gym")

ALL = "basic_arithmetic+chain_sum+letter_counting"


def _config(arg=f"tasks={ALL}", **overrides):
    c = rg_config.get_config(arg)
    for key, value in {**SMALL, "train.steps": 2, **overrides}.items():
        group, name = key.split(".")
        c[group][name] = value
    return c


def _task_config(c):
    return run_config.task_config(experiment.from_configdict(c))


def _build(c):
    return tasks_lib.build(_task_config(c))


def _validate(rg_tasks):
    c = _config()
    c.data.rg_tasks = rg_tasks
    tasks_lib.validate(_task_config(c))


def test_references_score_correct_and_wrong_answers_do_not():
    task = _build(_config(**{"data.train_size": 12, "data.eval_size": 12}))
    assert {ex.meta["rg_task"] for ex in task.test} == set(ALL.split("+"))
    ex = task.test[0]
    assert ex.prompt.endswith(rg_task.INSTRUCTION)
    assert ex.solution == f"<answer>{ex.answer}</answer>"
    spec = rg_task.Spec("letter_counting", 1.0, {})
    partial = rg_task.to_example({"question": "q", "answer": "3", "metadata": {}}, spec, "u/0")
    broken = rg_task.to_example({"question": "q", "answer": "3"}, spec, "u/1")
    del broken.meta["entry"]["answer"]  # score_answer raises in the worker
    with task.scorer() as score_fn:
        right = score_fn([ex.solution for ex in task.test], task.test)
        wrong = score_fn([f"<answer>{int(ex.answer) + 1}0</answer>" for ex in task.test], task.test)
        bare = score_fn([ex.answer for ex in task.test], task.test)
        other = score_fn(["<answer>33</answer>", "<answer>3</answer>"], [partial, broken])
    assert all(v.correct and v.reward == 1.0 and v.status == "correct" for v in right)
    assert not any(v.correct for v in wrong) and all(v.reward < 1.0 for v in wrong)
    assert {v.status for v in bare} == {"no_answer"} and not any(v.reward for v in bare)
    assert (other[0].status, other[0].reward, other[0].correct) == ("partial", 0.5, False)
    assert other[1].status == "verifier_error" and other[1].verifier_error
    assert "KeyError" in other[1].detail
    assert rg_task.timeout_verdict(("t", "chain_sum", "{}", {})).verifier_error
    m = task.metrics(right)
    assert m["rg/correct_frac"] == 1.0 and m["rg/letter_counting/acc"] == 1.0


def test_splits_are_deterministic_and_held_out_is_never_trained_on():
    # 1-digit sums have ~240 distinct questions: train repeats them, held-out must not leak.
    c = _config("tasks=basic_arithmetic", **{"data.train_size": 600, "data.eval_size": 64})
    a, b = _build(c), _build(c)
    assert [ex.prompt for ex in a.train] == [ex.prompt for ex in b.train]
    assert [ex.prompt for ex in a.test] == [ex.prompt for ex in b.test]
    held_out = {ex.prompt for ex in a.test}
    assert len(held_out) == 64 and not held_out & {ex.prompt for ex in a.train}
    c.seed = 1
    assert [ex.prompt for ex in _build(c).test] != [ex.prompt for ex in a.test]
    c.data.eval_size = 300  # more than the space holds
    with pytest.raises(ConfigError, match=r"data.rg_tasks\[0\] \(basic_arithmetic\).*eval_size"):
        _build(c)
    # Weights mix generators: about 3:1.
    c = _config(**{"data.train_size": 400})
    c.data.rg_tasks = (("chain_sum", 3.0, {}), ("letter_counting", 1.0, {}))
    names = [ex.meta["rg_task"] for ex in _build(c).train]
    assert 250 < names.count("chain_sum") < 350


def test_bad_rg_tasks_fail_naming_the_key(monkeypatch):
    with pytest.raises(ConfigError, match=r"data.rg_tasks is empty"):
        _validate(())
    with pytest.raises(ConfigError, match=r"data.rg_tasks\[1\]: unknown reasoning-gym dataset"):
        _validate((("chain_sum", 1.0, {}), ("chain_sums", 1.0, {})))
    with pytest.raises(ConfigError, match=r"data.rg_tasks\[0\]: weight must be a positive"):
        _validate((("chain_sum", 0.0, {}),))
    with pytest.raises(ConfigError, match=r"data.rg_tasks\[0\]: bad chain_sum config"):
        _validate((("chain_sum", 1.0, {"min_termz": 2}),))
    with pytest.raises(ConfigError, match=r"data.rg_tasks\[0\]: bad chain_sum config"):
        _validate((("chain_sum", 1.0, {"min_terms": 3, "max_terms": 2}),))
    with pytest.raises(ConfigError, match=r"data.rg_tasks\[0\]: \['seed'\] are set per split"):
        _validate((("chain_sum", 1.0, {"seed": 3}),))
    with pytest.raises(ConfigError, match=r"data.rg_tasks\[0\]=.*expected \(name, weight"):
        _validate(("chain_sum",))
    monkeypatch.setitem(sys.modules, "reasoning_gym", None)  # not installed
    with pytest.raises(ConfigError, match=r'pip install -e "\.\[rg\]"'):
        _validate((("chain_sum", 1.0, {}),))


def test_experiment_configs_validate():
    for name in rg_config.EASY:  # the measured configs, warm start and all
        cfg = experiment.from_configdict(rg_config.get_config(f"tasks={name}"))
        run_config.validate(cfg)
        tasks_lib.validate(run_config.task_config(cfg))
        assert cfg.data.rg_tasks == ((name, 1.0, rg_config.EASY[name]),)


def test_grpo_runs_on_reasoning_gym_rewards(tmp_path):
    """One RL step of the real loop (compiles dominate: no warm start, one step)."""
    c = _config(
        "tasks=chain_sum+letter_counting",
        **{"data.train_size": 30, "train.steps": 1, "warm_start.steps": 0},
    )
    experiment.run(c, str(tmp_path))
    rows = metrics_lib.read_metrics(str(tmp_path))
    assert any("eval/pass@1" in r and "eval/greedy_acc" in r for r in rows if r["step"] == 0)
    train = [r for r in rows if "rollout/reward_mean" in r]
    assert [r["step"] for r in train] == [1]
    shares = sum(train[0][f"rg/{s}_frac"] for s in rg_task.STATUSES)
    assert shares == pytest.approx(1.0)
    assert train[0]["rollout/verifier_error_frac"] == 0.0
