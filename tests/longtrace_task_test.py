"""The LongTraceRL task in the loop: its embedded tokenizer, shaping with every reward component
logged, held-out accuracy by hop count and tier, the released jsonl format end to end, and the
errors that name the key, the sample or the file line."""

# pylint: disable=invalid-name
import json
import os

import numpy as np
import pytest

from experiments.configs import longtrace as longtrace_config
from rlvr_jax import config as experiment
from rlvr_jax.data import longtrace_tokenizer
from rlvr_jax.errors import ConfigError
from rlvr_jax.models import build_tiny_tokenizer
from rlvr_jax.models import tokenizer as tokenizer_lib
from rlvr_jax.rewards import longtrace as rewards_lib
from rlvr_jax.tasks import config as task_config
from rlvr_jax.tasks import longtrace as task_lib
from rlvr_jax.train import metrics as metrics_lib
from tests.loop_test import SMALL

# A small run: short contexts, a few warm-start questions, two RL steps.
TINY = {
    **SMALL,
    "data.train_size": 8,
    "data.eval_size": 4,
    "longtrace.context_tokens": 640,
    "longtrace.max_hops": 3,
    "longtrace.warm_examples": 8,
    "sampling.max_new_tokens": 8,
    "train.steps": 2,
    "train.micro_batches": 1,
    "train.ref_micro_batches": 1,
    "eval.num_prompts": 4,
}


def _config(arg=None, **overrides):
    c = longtrace_config.get_config(arg)
    for key, value in {**TINY, **overrides}.items():
        group, name = key.split(".")
        c[group][name] = value
    return c


def test_config_context_default_follows_the_preset():
    """384 tokens for the ~1M CPU default (what it can look up), 2,048 otherwise; `context=`
    overrides both."""
    get = longtrace_config.get_config
    assert get().longtrace.context_tokens == 384 and get().train.steps == 60
    assert get("context=2048").longtrace.context_tokens == 2048
    big = get("preset=qwen3_8b_base")
    assert big.longtrace.context_tokens == 2048 and big.longtrace.max_hops == 8
    with pytest.raises(ValueError, match="combination='both'"):
        get("combination=both")


def test_tokenizer_build_is_deterministic_and_matches_checked_in_files(tmp_path):
    written = build_tiny_tokenizer.write(
        str(tmp_path), longtrace_tokenizer.corpus(), longtrace_tokenizer.VOCAB_SIZE
    )
    for path in written:
        name = os.path.basename(path)
        with open(path, "rb") as f:
            with open(os.path.join(longtrace_tokenizer.ASSET_DIR, name), "rb") as g:
                assert f.read() == g.read(), f"{name}: rebuild (longtrace_tokenizer)"
    tok = tokenizer_lib.load_tokenizer(longtrace_tokenizer.ASSET_DIR)
    tiny = tokenizer_lib.load_tiny_tokenizer()
    text = "Document [3]: Doravel\nDoravel is a city in Marn. Chain: Doravel -> Marn\nAnswer: Marn"
    assert tok.decode(tok.encode(text)) == text
    assert len(tok.encode(text)) * 2 <= len(tiny.encode(text))
    assert tok.decode(tok.eos_ids) == "<|im_end|>"


def test_loop_logs_every_reward_component_and_eval_by_hops_and_tier(tmp_path):
    c = _config()
    experiment.run(c, str(tmp_path))
    rows = metrics_lib.read_metrics(str(tmp_path))
    rl_rows = [r for r in rows if "rollout/reward_mean" in r]
    assert [r["step"] for r in rl_rows] == [1, 2]
    for key in (
        "longtrace/outcome_mean",
        "longtrace/rubric_mean",
        "longtrace/rubric_norm_mean",
        "longtrace/reward_train_mean",
        "longtrace/rubric_on_correct",
        "longtrace/rubric_on_wrong",
        "longtrace/no_answer_frac",
    ):
        assert key in rl_rows[0], key
    ev = [r for r in rows if "eval/greedy_acc" in r][-1]
    hops = [k for k in ev if k.startswith("eval/acc/hops_")]
    assert hops and {k.rsplit("_", 1)[1] for k in hops} <= {"2", "3"}
    # The held-out questions are packed once per distractor mix: Tier-2 only, mixed, Tier-1 only.
    assert {"eval/acc/tier_tier2", "eval/acc/tier_mixed", "eval/acc/tier_tier1"} <= set(ev)
    assert "eval/rubric_on_correct" in ev
    # The rubric is at least the start entity's share whenever the question is copied; with a
    # random policy it is just a float in [0, 1].
    assert 0.0 <= rl_rows[0]["longtrace/rubric_mean"] <= 1.0


def test_shape_combines_as_configured(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps(_row()) + "\n")
    verdicts = [
        rewards_lib.LongTraceVerdict(1.0, True, "correct", 0.5),
        rewards_lib.LongTraceVerdict(1.0, True, "correct", 1.0),
        rewards_lib.LongTraceVerdict(0.0, False, "wrong", 0.8),
        rewards_lib.LongTraceVerdict(0.0, False, "no_answer", 0.0),
    ]
    for mode, want in (
        ("positive_only", [0.85, 1.0, 0.0, 0.0]),
        ("negative_only", [1.0, 1.0, 0.24, 0.0]),
        ("ungated", [0.85, 1.0, 0.24, 0.0]),
        ("outcome", [1.0, 1.0, 0.0, 0.0]),
    ):
        cfg = task_config.TaskConfig(
            data=task_config.DataConfig(
                source="longtrace", train_files=(str(path),), eval_files=(str(path),)
            ),
            longtrace=task_config.LongTraceSection(format="jsonl", combination=mode),
        )
        task = task_lib.LongTraceTask(cfg)
        shaped = task.shape(task.train, verdicts, 4, None)
        np.testing.assert_allclose(shaped.rewards_B, want, atol=1e-6)
        m = shaped.metrics
        assert m["longtrace/rubric_on_correct"] == pytest.approx(0.75)
        assert m["longtrace/rubric_on_wrong"] == pytest.approx(0.4)
        assert m["longtrace/outcome_mean"] == 0.5 and m["longtrace/no_answer_frac"] == 0.25
        assert m["longtrace/rubric_norm_mean"] == pytest.approx((0.5 + 1 + 0.8) / 4)
        assert m["longtrace/reward_train_mean"] == pytest.approx(np.mean(want))


def _row(label="Marn", rubrics=("Doravel", "Marn")):
    return {
        "source": "longtrace",
        "input_messages": [
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": "Document [1]: Doravel\nDoravel is in Marn.\nQ?"},
        ],
        "label": label,
        "metadata": {"extra_reward_info": {"rubrics": list(rubrics)}},
    }


def test_released_jsonl_trains_unchanged(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(json.dumps(_row()) for _ in range(4)) + "\n")
    c = _config(**{"longtrace.format": "jsonl", "warm_start.steps": 0})
    c.data.train_files = c.data.eval_files = (str(path),)
    experiment.run(c, str(tmp_path / "run"))
    rows = metrics_lib.read_metrics(str(tmp_path / "run"))
    assert [r["step"] for r in rows if "longtrace/outcome_mean" in r] == [1, 2]
    # The scorer reads the file's rubric entities.
    v = rewards_lib.score("Chain: Doravel\nAnswer: Marn", "Marn", _row()["metadata"][
        "extra_reward_info"]["rubrics"])  # fmt: skip
    assert v.correct and v.rubric == 1.0


def test_bad_input_names_the_key_the_sample_and_the_line(tmp_path):
    with pytest.raises(ConfigError, match="longtrace.combination"):
        experiment.run(_config(**{"longtrace.combination": "both"}), str(tmp_path / "a"))
    with pytest.raises(ConfigError, match="longtrace.min_hops=2, max_hops=9"):
        experiment.run(_config(**{"longtrace.max_hops": 9}), str(tmp_path / "b"))
    # A context budget the gold documents cannot fit: the sample is named, nothing truncated.
    with pytest.raises(ValueError, match=r"longtrace sample longtrace/train/0/\d+"):
        experiment.run(_config(**{"longtrace.context_tokens": 64}), str(tmp_path / "c"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(_row()) + "\n" + json.dumps(_row(rubrics=())) + "\n")
    c = _config(**{"longtrace.format": "jsonl", "warm_start.steps": 0})
    c.data.train_files = c.data.eval_files = (str(bad),)
    with pytest.raises(ValueError, match=r"bad.jsonl:2: .*rubrics"):
        experiment.run(c, str(tmp_path / "d"))
