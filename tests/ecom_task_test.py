"""The Ecom-RLVE task: episodes assigned by curriculum and adaptive difficulty, counters moved by
frontier episodes only and checkpointed, expert warm-start rows, config errors, and one short run
of the loop through the environments' worker pool."""

# pylint: disable=invalid-name
import json

import jax
import numpy as np
import pytest

from experiments.configs import ecom_rlve
from rlvr_jax import config as experiment
from rlvr_jax.errors import ConfigError
from rlvr_jax.models import tokenizer as tokenizer_lib
from rlvr_jax.rollout import multi_turn
from rlvr_jax.tasks import config as task_config
from rlvr_jax.tasks import ecom
from rlvr_jax.train import run_config
from rlvr_jax.train import setup as setup_lib


def _task(**ecom_kw):
    cfg = task_config.TaskConfig(
        data=task_config.DataConfig(source="ecom", train_size=50, eval_size=12),
        ecom=task_config.EcomSection(**ecom_kw),
    )
    return ecom.EcomTask(cfg)


def _verdict(correct, status="ok"):
    return multi_turn.EpisodeVerdict(
        reward=0.8 if correct else -0.2, correct=correct, status=status, turns=2, info={}
    )


def test_examples_and_episode_assignment():
    task = _task(envs=("PD", "CART"))
    assert len(task.train) == 50 and len(task.test) == 12
    assert {ex.meta["env"] for ex in task.test} == {"PD", "CART"}
    assert all(ex.meta["difficulty"] == 2 for ex in task.test)
    state = task.init_state()
    key = jax.random.key(3)
    a = task.episode_examples(task.train[:20], state, key)
    b = task.episode_examples(task.train[:20], state, key)
    assert [x.meta for x in a] == [x.meta for x in b]  # deterministic by key
    assert {x.meta["env"] for x in a} == {"PD", "CART"}
    assert all(x.meta["difficulty"] == 0 for x in a)  # window [0, 0] at the start
    # Held-out examples keep their fixed episode.
    assert task.episode_examples(task.test, state, key) == task.test


def test_fixed_difficulty_and_curriculum():
    task = _task(adaptive=False, difficulty=5, curriculum_every=2)
    state = task.init_state()
    out = task.episode_examples(task.train, state, jax.random.key(0))
    assert {x.meta["env"] for x in out} == {"PD"}  # C1
    assert {x.meta["difficulty"] for x in out} == {5}
    assert task.stage_envs(ecom.EcomState(state.adaptive, steps=2)) == ("PD", "SUB")
    assert set(task.stage_envs(ecom.EcomState(state.adaptive, steps=99))) == set(
        task_config.EcomSection().envs
    )


def test_shape_moves_frontier_counters_and_checkpoints():
    task = _task(envs=("PD",), tau_num=4, tau_acc=0.75)
    state = task.init_state()
    exs = [ex.__class__(ex.uid, "", "", meta=dict(ex.meta, env="PD", difficulty=0, group="PD"))
           for ex in task.train[:3]]  # fmt: skip
    # G = 2: rows (0, 1) are example 0's. An env_error says nothing about the policy.
    verdicts = [_verdict(True), _verdict(True), _verdict(True), _verdict(False, "env_error")]
    shaped = task.shape(exs[:2], verdicts, 2, state)
    np.testing.assert_allclose(shaped.rewards_B, [0.8, 0.8, 0.8, -0.2])
    s = shaped.state.adaptive["PD"]
    assert (s.l, s.h, s.a, s.b) == (0, 0, 3, 3)
    shaped = task.shape(exs[:1], [_verdict(False), _verdict(True)], 2, shaped.state)
    s = shaped.state.adaptive["PD"]  # 4/5 >= 0.75 once b reached 4: promoted, counters reset
    assert (s.l, s.h, s.a, s.b) == (0, 1, 0, 0)
    assert shaped.metrics["ecom/PD/window_h"] == 1.0
    assert shaped.state.steps == 2
    record = json.loads(json.dumps(task.state_to_record(shaped.state)))
    assert task.state_from_record(record) == shaped.state
    assert task.state_from_record({}) == task.init_state()


def test_warm_rows_are_solved_expert_episodes_within_budget():
    task = _task(envs=("POLICY", "STATUS"), expert_episodes=8)
    tok = tokenizer_lib.load_tokenizer(ecom_rlve.ecom_tokenizer.ASSET_DIR)
    rows = task.warm_rows(tok, seed=0, max_tokens=512)
    assert 0 < len(rows) <= 8
    for prompt, completion, mask in rows:
        assert len(prompt) + len(completion) <= 512
        assert len(mask) == len(completion) and any(mask) and not all(mask)
        trained = tok.decode([t for t, m in zip(completion, mask, strict=True) if m])
        assert "answer.submit" in trained  # the expert's final call is trained on
        context = tok.decode([t for t, m in zip(completion, mask, strict=True) if not m])
        assert "<|im_start|>tool" in context  # tool results are context


def test_config_errors():
    with pytest.raises(ConfigError, match="ecom.envs"):
        ecom.validate(task_config.TaskConfig(ecom=task_config.EcomSection(envs=("PD", "NOPE"))))
    with pytest.raises(ConfigError, match="one host"):
        ecom.validate(task_config.TaskConfig(), processes=2)
    c = ecom_rlve.get_config(None)
    c.ecom.tau_acc = 1.5
    with pytest.raises(ConfigError, match="ecom"):
        experiment.from_configdict(c)
    c = ecom_rlve.get_config(None)
    c.model.init_from = "/some/checkpoint"
    with pytest.raises(ConfigError, match="model.rope_theta"):
        run_config.validate(experiment.from_configdict(c))


def test_preset_takes_the_configured_rope_base_and_the_tokenizer_vocabulary():
    c = ecom_rlve.get_config(None)
    model_cfg, tok = setup_lib.load_model(experiment.from_configdict(c))
    assert model_cfg.rope_theta == c.model.rope_theta == 1e4
    assert model_cfg.vocab_size == tok.vocab_size == 1024
    c.model.rope_theta = 0.0  # the preset's own
    model_cfg, _ = setup_lib.load_model(experiment.from_configdict(c))
    assert model_cfg.rope_theta == 1e6


def test_short_run_trains_through_the_pool(tmp_path):
    """Warm start, two multi-turn GRPO steps and an eval through worker processes; the metrics
    name every environment's window, and a rerun resumes with the same task state."""
    c = ecom_rlve.get_config("envs=POLICY+STATUS")
    c.data.update(train_size=40, eval_size=4)
    c.ecom.update(expert_episodes=16, workers=1)
    c.multi_turn.update(max_turns=3, turn_tokens=32, sampled_tokens=64, episode_tokens=320)
    c.sampling.update(slots=8)
    c.rl.group_size = 2
    c.train.update(steps=2, prompts_per_step=2)
    c.warm_start.update(steps=4, batch_size=4)
    c.eval.update(every=2, num_prompts=4)
    c.ckpt.every = 1
    workdir = str(tmp_path / "run")
    last = experiment.run(c, workdir)
    for key in ("ecom/POLICY/window_h", "ecom/STATUS/window_l", "ecom/reward", "eval/success"):
        assert key in last, sorted(last)
    assert "rollout/mismatch_kl" in last
    lines = [json.loads(x) for x in open(f"{workdir}/metrics.jsonl")]
    assert [x["step"] for x in lines if "perf/step_s" in x] == [1, 2]
    c.train.steps = 3
    last = experiment.run(c, workdir)  # resumes at step 2 and takes one more
    lines = [json.loads(x) for x in open(f"{workdir}/metrics.jsonl")]
    assert [x["step"] for x in lines if "perf/step_s" in x] == [1, 2, 3]
    assert last["ecom/stage_envs"] == 2.0
