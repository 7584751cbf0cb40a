"""DelTA, OPD (TOPD horizon) and DistIL switched on in the RL loop, end to end on a tiny config."""

import json
import math
import shutil

import jax
import pytest

from rlvr_jax import config as experiment
from rlvr_jax.errors import ConfigError
from rlvr_jax.models import config as config_lib
from rlvr_jax.models import hf
from rlvr_jax.models import params as params_lib
from rlvr_jax.models import tokenizer as tokenizer_lib
from rlvr_jax.train import metrics as metrics_lib
from tests.loop_test import small_config

STEPS = {"train.steps": 2, "eval.every": 0}


def _rows(workdir):
    return [r for r in metrics_lib.read_metrics(workdir) if "rollout/reward_mean" in r]


def _teacher(folder, preset="tiny", seed=1):
    cfg = config_lib.get_preset(preset)
    hf.save_checkpoint(str(folder), cfg, params_lib.init_params(cfg, jax.random.key(seed)))
    shutil.copytree(tokenizer_lib.TINY_TOKENIZER_DIR, folder, dirs_exist_ok=True)
    return str(folder)


def test_delta_in_the_loop_logs_its_coefficients(tmp_path):
    experiment.run(small_config(**STEPS, **{"delta.enabled": True}), str(tmp_path))
    rows = _rows(tmp_path)
    assert len(rows) == 2
    trained = [r for r in rows if r["rollout/prompts"] > 0]
    assert trained  # every trained step logs DelTA's statistics (no vacuous pass)
    for r in trained:
        assert "delta/shared_weight_share" in r
        assert r["delta/omega_mean"] == pytest.approx(1.0, abs=1e-5)
        assert 0 < r["delta/omega_min"] <= 1.0 + 1e-5
        assert r["delta/omega_max"] >= 1.0 - 1e-5
        # float32 sampler and trainer on the same weights: the mismatch is rounding noise.
        assert 0 <= r["rollout/mismatch_kl"] < 1e-5
        assert r["rollout/mismatch_log_ratio_max"] < 1e-3


def test_delta_with_several_updates_computes_its_coefficients_once(tmp_path):
    """rl.num_updates=2: one pre-update pass over the whole batch (delta.make_delta_fn) gives the
    coefficients; the two updates then train on them."""
    overrides = {**STEPS, "delta.enabled": True, "rl.num_updates": 2}
    experiment.run(small_config(**overrides), str(tmp_path))
    trained = [r for r in _rows(tmp_path) if r["rollout/prompts"] > 0]
    assert trained
    for r in trained:
        assert r["delta/omega_mean"] == pytest.approx(1.0, abs=1e-5)
        assert "delta/gamma_pos" in r and r["train/skipped"] == 0


def test_overlong_filter_takes_truncated_completions_out_of_the_loss(tmp_path):
    """DAPO / TRL: a truncated completion carries no token of the loss (not only a zero
    advantage): the trained token count is the stopped rows' tokens alone."""
    L = 16
    overrides = {**STEPS, "rl.overlong_filter": True, "sampling.max_new_tokens": L}
    c = small_config(**overrides)
    experiment.run(c, str(tmp_path))
    rows = _rows(tmp_path)
    B = c.train.prompts_per_step * c.rl.group_size
    assert any(r["rollout/truncated_frac"] > 0 for r in rows)  # not a vacuous pass
    for r in rows:
        truncated_tokens = r["rollout/truncated_frac"] * B * L  # a truncated row has L tokens
        kept = r["rollout/len_mean"] * B - truncated_tokens
        assert r["train/tokens"] == pytest.approx(kept, abs=1e-3)
        if r["rollout/truncated_frac"] == 1.0:
            assert r["train/loss"] == 0.0 and r["rl/entropy"] == 0.0


def test_topd_samples_only_its_horizon_and_distills(tmp_path):
    teacher = _teacher(tmp_path / "teacher")
    c = small_config(**STEPS, **{"opd.enabled": True, "opd.teacher": teacher})
    c.opd.horizon = "truncated"
    experiment.run(c, str(tmp_path / "run"))
    L = c.sampling.max_new_tokens
    for r in _rows(tmp_path / "run"):
        assert r["opd/horizon"] == math.ceil(0.1 * L)
        assert r["rollout/len_mean"] <= math.ceil(0.1 * L)
        assert "opd/reverse_kl" in r and math.isfinite(r["opd/reverse_kl"])


def test_opd_teacher_with_another_tokenizer_is_refused(tmp_path):
    teacher = _teacher(tmp_path / "teacher")
    with open(f"{teacher}/tokenizer.json") as f:
        tokenizer = json.load(f)
    vocab = tokenizer["model"]["vocab"]
    vocab["+"], vocab["="] = vocab["="], vocab["+"]  # same strings, other ids
    with open(f"{teacher}/tokenizer.json", "w") as f:
        json.dump(tokenizer, f)
    c = small_config(**STEPS, **{"opd.enabled": True, "opd.teacher": teacher})
    with pytest.raises(ConfigError, match="tokenizer differs"):
        experiment.run(c, str(tmp_path / "run"))


def test_distil_self_teacher_with_verifier_feedback(tmp_path):
    experiment.run(
        small_config(**STEPS, **{"distil.enabled": True, "distil.top_k": 4}), str(tmp_path)
    )
    rows = _rows(tmp_path)
    assert len(rows) == 2
    assert all(math.isfinite(r["distil/ce"]) and r["distil/ce"] > 0 for r in rows)


def test_research_configs_fail_with_the_key_named(tmp_path):
    with pytest.raises(ConfigError, match="opd.enabled needs opd.teacher"):
        experiment.run(small_config(**{"opd.enabled": True}), str(tmp_path / "a"))
    with pytest.raises(ConfigError, match="delta.enabled needs rl.loss_agg"):
        experiment.run(
            small_config(**{"delta.enabled": True, "rl.loss_agg": "seq_mean_token_mean"}),
            str(tmp_path / "b"),
        )
    old = small_config()
    old.rlif.kl_cov = True  # the pre-issue-12 key: KL-Cov is a policy-loss mode now
    with pytest.raises(ConfigError, match="rl.policy_loss='kl_cov'"):
        experiment.run(old, str(tmp_path / "c"))


def test_topd_sampler_generates_ceil_rho_l_tokens():
    """The rollout config of every TOPD step asks for ceil(rho * L) tokens; the sampler's output
    is that horizon's bucket wide and no row is longer."""
    from rlvr_jax import sampling
    from rlvr_jax.objectives import opd as opd_lib

    L = 64
    full = sampling.SamplingConfig(max_new_tokens=L, eos_ids=())
    topd = opd_lib.OPDConfig(enabled=True, horizon="truncated", rho=0.1)
    cfg = opd_lib.OPDHook(topd, None, None).sampling(full, step=7)
    assert cfg.max_new_tokens == math.ceil(0.1 * L) == 7
    model_cfg = config_lib.get_preset("tiny")
    params = params_lib.init_params(model_cfg, jax.random.key(0))
    out = sampling.generate(
        params, [[1, 2, 3], [4, 5]], jax.random.key(1), model_cfg=model_cfg, cfg=cfg
    )
    Tc = sampling.bucket(7, cfg.completion_buckets, "max_new_tokens")
    assert out.tokens_BxTc.shape == (2, Tc) and Tc < L
    assert int(out.lengths_B.max()) == 7  # no stop token: exactly the horizon


def test_rlif_trains_without_reading_any_answer(tmp_path, monkeypatch):
    """Label-free RLIF with KL-Cov: corrupting every training answer changes no training number
    (only the monitoring metrics that compare with answers)."""
    import dataclasses

    from rlvr_jax.tasks import math as math_task

    overrides = {
        **STEPS,
        "rlif.enabled": True,
        "rl.policy_loss": "kl_cov",
        "rl.kl_cov_ratio": 0.2,
    }
    experiment.run(small_config(**overrides), str(tmp_path / "true"))
    load_data = math_task.load_data

    def corrupted(c):
        train, held_out = load_data(c)
        return [dataclasses.replace(e, answer="987654321") for e in train], held_out

    monkeypatch.setattr(math_task, "load_data", corrupted)
    experiment.run(small_config(**overrides), str(tmp_path / "corrupted"))
    a, b = _rows(tmp_path / "true"), _rows(tmp_path / "corrupted")
    keys = [k for k in a[0] if k.startswith(("train/", "rl/", "rlif/")) and "precision" not in k]
    assert {"rlif/vote_reward", "rlif/self_certainty", "rl/kl_cov_frac"} <= set(keys)
    for ra, rb in zip(a, b, strict=True):
        assert {k: ra[k] for k in keys} == {k: rb[k] for k in keys}
    assert any(
        ra["rollout/reward_mean"] != rb["rollout/reward_mean"] for ra, rb in zip(a, b, strict=True)
    ) or all(ra["rollout/reward_mean"] == 0 for ra in a)
