"""Code (sandbox) and rubric (POW3R, a judge run by our sampler) task kinds in the RL loop, and the
host-side pieces they add: the synthetic code family, POW3R rewards of a rollout, code feedback for
DistIL, rollout statistics of code verdicts."""

import json
import re

import jax
import numpy as np
import pytest

from experiments.configs import grpo_code
from experiments.configs import rubric as rubric_config
from rlvr_jax import config as experiment
from rlvr_jax import tasks as tasks_lib
from rlvr_jax.data import code_synthetic, feedback, rubric_tasks, synthetic
from rlvr_jax.errors import ConfigError
from rlvr_jax.rewards import code as code_lib
from rlvr_jax.rewards import math as math_lib
from rlvr_jax.rewards import rubric as rubric_lib
from rlvr_jax.tasks import code as code_task
from rlvr_jax.tasks import rubric as rubric_task
from rlvr_jax.train import metrics as metrics_lib
from rlvr_jax.train import run_config
from rlvr_jax.train import setup as setup_lib
from tests import fixtures
from tests.loop_test import SMALL

sandboxed = fixtures.sandbox_mark()


def _config(get_config, arg=None, **overrides):
    c = get_config(arg)
    for key, value in {**SMALL, "train.steps": 2, **overrides}.items():
        group, name = key.split(".")
        c[group][name] = value
    return c


def _rows(workdir):
    return [r for r in metrics_lib.read_metrics(workdir) if "rollout/reward_mean" in r]


# --- The synthetic code family ---


def test_code_split_is_deterministic_disjoint_and_references_pass():
    train = code_synthetic.make_split("train", 60, seed=3)
    assert [t.prompt for t in train] == [
        t.prompt for t in code_synthetic.make_split("train", 60, 3)
    ]
    test = code_synthetic.make_split("test", 30, seed=3)
    assert not {t.prompt for t in train} & {t.prompt for t in test}
    assert all(synthetic.is_held_out(t.prompt) for t in test)
    assert [t.uid for t in train[:2]] == ["code_synth/train/3/0", "code_synth/train/3/1"]
    ex = code_synthetic.to_example(train[0])
    assert ex.uid == train[0].uid and ex.solution.startswith("```python\n")
    with pytest.raises(ValueError, match="split must be one of"):
        code_synthetic.make_split("dev", 1, 0)


@sandboxed
def test_code_references_pass_and_a_wrong_constant_fails():
    tasks = code_synthetic.make_split("test", 6, seed=0)  # every family twice
    cfg = code_lib.CodeConfig()
    right = [code_synthetic.to_example(t).solution for t in tasks]
    assert all(v.correct for v in code_lib.score_many(right, tasks, cfg))
    # The last constant off by one: a wrong program that still runs.
    wrong = [re.sub(r"(\d+)(\D*)$", lambda m: f"{int(m[1]) + 1}{m[2]}", s) for s in right]
    assert all(w != r for w, r in zip(wrong, right, strict=True))
    assert not any(v.correct for v in code_lib.score_many(wrong, tasks, cfg))


def test_code_tasks_load_from_mbpp_files_with_tests_by_uid(tmp_path):
    row = {"task_id": 7, "text": "Add two numbers.", "code": "def add(a, b):\n    return a + b",
           "test_list": ["assert add(1, 2) == 3", "assert add(-1, 1) == 0"]}  # fmt: skip
    path = tmp_path / "mbpp.jsonl"
    path.write_text(json.dumps(row) + "\n")
    c = grpo_code.get_config("format=mbpp")
    c.data.train_files = c.data.eval_files = (str(path),)
    data = _task(c)
    (ex,) = data.train
    assert (
        data.test == data.train
        and ex.solution == "```python\ndef add(a, b):\n    return a + b\n```"
    )
    assert [t.args for t in data.by_uid[ex.uid].tests] == [(1, 2), (-1, 1)]


def test_every_task_kind_scores_its_reference_solution_correct():
    """The scorer each kind's loop uses, on the reference solutions: all correct, and a wrong
    reply never is (a scorer fed the wrong field would score everything 0)."""
    from experiments.configs import grpo_math

    configs = [grpo_math.get_config(), rubric_config.get_config()]
    if fixtures.sandbox_available():
        configs.append(grpo_code.get_config())
    for c in configs:
        c.data.train_size, c.data.eval_size = 6, 6
        data = _task(c)
        with data.scorer() as score_fn:
            right = score_fn([ex.solution or ex.answer for ex in data.test], data.test)
            wrong = score_fn(["No idea."] * len(data.test), data.test)
        assert all(v.correct and v.reward == 1.0 for v in right), (c.data.source, right)
        assert not any(v.correct for v in wrong), c.data.source


# --- Verdicts in rollouts and feedback ---


def test_code_timeout_is_not_a_verifier_error_and_feedback_reaches_distil():
    timeout = code_lib.CodeVerdict(0.0, 0, 3, "timeout", "Test 1 of 3 failed (timed out).")
    broken = code_lib.CodeVerdict(0.0, 0, 3, "verifier_error", "OSError")
    assert not timeout.correct and not timeout.verifier_error and broken.verifier_error
    math_timeout = math_lib.timeout_verdict(None)  # the math pool's worker killed: its fault
    assert (
        math_timeout.verifier_error
        and not math_lib.MathVerdict(0.0, False, None, "wrong").verifier_error
    )
    ex = code_synthetic.to_example(code_synthetic.make_split("train", 1, 0)[0])
    fbs = feedback.group_feedback("verifier", ex, ["a", "b"], [False, False], [timeout, broken])
    assert fbs == [timeout.feedback, broken.feedback]
    m = code_task.code_metrics([timeout, broken])
    assert m["code/timeout_frac"] == 0.5 and m["code/tests_passed_frac"] == 0.0


def _miss_one_content_criterion(example):
    """The reference reply with one content criterion failed: the required item swapped out of
    the list, or the city left out of the summary."""
    if example.meta["family"] == "numbered_list":
        return example.answer.replace(example.meta["must"], "zebra")
    reply = json.loads(example.answer)
    reply["summary"] = "A short note."
    return json.dumps(reply)


def _rubric_rollout(G=4):
    """Two prompts of each family; in each group one reply is perfect and G - 1 miss the same
    content criterion, so only that criterion has any contrast."""
    tasks = rubric_tasks.make_split("train", 4, seed=0)
    examples, verdicts = [], []
    for t in tasks:
        examples.append(t.example)
        good = rubric_lib.score(t.example.answer, t.rubric)
        bad = rubric_lib.score(_miss_one_content_criterion(t.example), t.rubric)
        assert good.correct and 0 < bad.reward < 1
        verdicts += [good] + [bad] * (G - 1)
    return examples, verdicts


def test_rubric_rewards_human_weights_when_off_and_pow3r_reweights_when_on():
    examples, verdicts = _rubric_rollout()
    off = rubric_task.rubric_rewards(examples, verdicts, 4, cfg=None, state={})
    np.testing.assert_allclose(off.rewards_B, [v.reward for v in verdicts])
    assert "rubric/numbered_list/pass_rate/includes" in off.metrics
    assert "rubric/person_json/weight/age" in off.metrics
    on = rubric_task.rubric_rewards(examples, verdicts, 4, cfg=rubric_lib.Pow3rConfig(), state={})
    assert on.metrics["rubric/reward_human_mean"] == pytest.approx(np.mean(off.rewards_B))
    # The one criterion with contrast gains weight from its saturated category siblings (the
    # category total is kept), so the replies that miss it lose more than under human weights;
    # the perfect replies keep full marks.
    bad = [b for b in range(16) if b % 4]
    assert np.all(on.rewards_B[bad] < off.rewards_B[bad])
    np.testing.assert_array_equal(on.rewards_B[::4], 1.0)
    assert on.metrics["rubric/numbered_list/weight/includes"] > 2.0  # human weight 2


def test_pow3r_state_round_trips_through_json():
    state = {"f": rubric_lib.Pow3rState({"u1": np.array([0.5, np.nan])})}
    again = rubric_task.pow3r_state_from_json(
        json.loads(json.dumps(rubric_task.pow3r_state_to_json(state)))
    )
    np.testing.assert_array_equal(again["f"].contrast["u1"], state["f"].contrast["u1"])


# --- The loop ---


def test_task_configs_fail_with_the_key_named(tmp_path):
    with pytest.raises(ConfigError, match="code.format='csv'"):
        experiment.run(_config(grpo_code.get_config, **{"code.format": "csv"}), str(tmp_path / "a"))
    with pytest.raises(ConfigError, match="code.format='mbpp' needs data.train_files"):
        experiment.run(_config(grpo_code.get_config, "format=mbpp"), str(tmp_path / "b"))
    with pytest.raises(ConfigError, match="m_max"):
        experiment.run(
            _config(rubric_config.get_config, **{"rubric.m_max": 0.01}), str(tmp_path / "c")
        )


@sandboxed
def test_grpo_code_trains_on_sandbox_rewards_and_resumes(tmp_path):
    c = _config(grpo_code.get_config, **{"data.train_size": 30, "data.eval_size": 2})
    experiment.run(c, str(tmp_path))
    rows = _rows(tmp_path)
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:  # every rollout row went through the sandbox and got a status
        shares = sum(r[f"code/{s}_frac"] for s in code_lib.STATUSES)
        assert shares == pytest.approx(1.0)
        assert r["code/verifier_error_frac"] == 0.0
        assert r["rollout/verifier_error_frac"] == 0.0  # a program's own failure is not one
    c.train.steps = 3
    experiment.run(c, str(tmp_path))  # resumes from step 2
    assert [r["step"] for r in _rows(tmp_path)] == [1, 2, 3]


def test_rubric_pow3r_with_the_policy_as_judge(tmp_path):
    c = _config(rubric_config.get_config, "judge=policy", **{"data.train_size": 30})
    c.rubric.judge_max_new_tokens = 8
    c.rubric.judge_retries = 0
    experiment.run(c, str(tmp_path))
    rows = _rows(tmp_path)
    assert len(rows) == 2
    for r in rows:
        assert r["judge/generations"] > 0  # the judge criterion went through our sampler
        # Without retries every generation ends as a pass, a fail or an invalid verdict, the last
        # counted apart (an 8-token reply of a barely trained policy is rarely strict JSON).
        outcomes = sum(r.get(f"judge/{k}", 0) for k in ("passed", "failed", "invalid_verdicts"))
        assert outcomes == r["judge/generations"]
        assert r["rubric/invalid_frac"] > 0 or r.get("judge/passed", 0) + r.get("judge/failed", 0)
        assert "rubric/person_json/weight/on_topic" in r
        assert 0.0 <= r["rubric/reward_train_mean"] <= 1.0
    evals = [r for r in metrics_lib.read_metrics(tmp_path) if "eval/reward_mean" in r]
    assert evals and all(0.0 <= r["eval/reward_mean"] <= 1.0 for r in evals)


def test_judge_from_an_hf_folder_runs_through_our_sampler(tmp_path):
    from rlvr_jax import mesh as mesh_lib
    from rlvr_jax import sampling
    from rlvr_jax.rollout import single_turn
    from rlvr_jax.tasks import base as task_base
    from tests.loop_research_test import _teacher

    c = rubric_config.get_config(f"judge={_teacher(tmp_path / 'judge')}")
    c.rubric.judge_max_new_tokens = 6
    cfg = experiment.from_configdict(c)
    model_cfg, tok = setup_lib.load_model(cfg)
    mesh = mesh_lib.make_mesh((-1, 1, 1))
    key = jax.random.key(0)
    ctx = task_base.TaskContext(
        tok=tok,
        model_cfg=model_cfg,
        sampling_cfg=sampling.SamplingConfig(
            eos_ids=tok.eos_ids, pad_id=tok.pad_id, max_new_tokens=6
        ),
        mesh=mesh,
        policy_params=lambda: pytest.fail("the policy is not the judge here"),
        generate=lambda params, ids, judge_cfg, scfg: single_turn.generate(
            params, ids, key, model_cfg=judge_cfg, sampling_cfg=scfg, mesh=mesh
        ),
    )
    judge = rubric_task.make_judge(run_config.task_config(cfg), ctx)
    task = rubric_tasks.make_split("train", 1, seed=0)[0]
    item = (task.example.prompt, task.example.answer, rubric_tasks.JUDGE_CRITERION)
    (verdict,) = judge.judge_many([item])
    # A random 6-token reply is not a strict JSON verdict; retried judge_retries times, then
    # counted invalid (never a pass or a fail, never cached).
    assert verdict.passed is None and not verdict.valid
    assert judge.stats["generations"] == 1 + c.rubric.judge_retries
    assert judge.stats["invalid_verdicts"] == 1 and not judge.cache


def test_steps_to_plateau_uses_the_trailing_mean():
    from experiments import steps_to_plateau

    steps, values = np.array([0, 4, 8, 12]), np.array([0.5, 0.9, 0.5, 0.8])
    # Trailing means of 2: 0.5, 0.7, 0.7, 0.65. The 0.9 spike alone reaches 0.71 only with a
    # window of 1.
    assert steps_to_plateau.first_reach(steps, values, 0.7, 2) == 4
    assert steps_to_plateau.first_reach(steps, values, 0.71, 2) is None
    assert steps_to_plateau.first_reach(steps, values, 0.9, 1) == 4


def test_code_without_namespaces_fails_loudly_naming_the_key(monkeypatch):
    from rlvr_jax.rewards import sandbox

    def unavailable():
        raise sandbox.SandboxUnavailable("user namespaces are disabled here.")

    monkeypatch.setattr(sandbox, "probe_isolation", unavailable)
    c = grpo_code.get_config()
    c.data.train_size, c.data.eval_size = 3, 3
    with pytest.raises(sandbox.SandboxUnavailable, match="code.allow_weak=True"):
        with _task(c).scorer():
            pass


def _task(c):
    """The task of an experiment ConfigDict, as the loop builds it (no judge model)."""
    return tasks_lib.build(run_config.task_config(experiment.from_configdict(c)))
