"""Sampler/trainer mismatch corrections (TIS, MIS / IcePop, per token and per sequence), GSPO and
CISPO: values and gradients against the formulas written out by hand, with the worked examples of
docs/mismatch.md; then the train step, the recompute pass, the config checks and the bf16 sampler.
"""

import dataclasses
import math
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlvr_jax import config as experiment
from rlvr_jax import mesh as mesh_lib
from rlvr_jax import sampling
from rlvr_jax.errors import ConfigError
from rlvr_jax.models import config as config_lib
from rlvr_jax.models import params as params_lib
from rlvr_jax.objectives import batch as batch_lib
from rlvr_jax.objectives import forward as forward_lib
from rlvr_jax.objectives import mismatch, rl_config
from rlvr_jax.objectives import objective as objective_lib
from rlvr_jax.objectives import policy_loss as pl
from rlvr_jax.rollout import types as rollout_types
from rlvr_jax.train import build as build_lib
from rlvr_jax.train import metrics as metrics_lib
from rlvr_jax.train import run_config
from rlvr_jax.train import state as state_lib
from rlvr_jax.train import step as step_lib
from tests.loop_test import small_config

# --- The worked example: three tokens, one sequence, one update (pi_theta = pi_old), A = +1 ---
MU = np.array([[-1.2, -0.3, -2.0]], np.float32)  # the sampler's log-probs
W = np.array([1.5, 0.4, 3.0])  # pi_old / mu per token; the sequence weight is their product 1.8
PI_OLD = (MU + np.log(W)).astype(np.float32)  # ~ [-0.7945, -1.2163, -0.9014]
ONES = np.ones((1, 3), np.float32)
MASK = np.ones((1, 3), bool)


def _value_and_grad(rl, logps, old, adv=ONES, **kwargs):
    f = lambda lp: pl.policy_loss(lp, old, adv, MASK, rl=rl, **kwargs)  # noqa: E731
    (loss, metrics), grad = jax.value_and_grad(f, has_aux=True)(jnp.asarray(logps))
    return float(loss), np.asarray(grad)[0], metrics


def test_worked_example_numbers():
    np.testing.assert_allclose(PI_OLD[0], [-0.7945, -1.2163, -0.9014], atol=1e-4)
    assert math.prod(W) == pytest.approx(1.8)


# mode, (lo, C), the weight every token gets: written out from the formula table.
CASES = [
    # token TIS: min(w, C); the lower bound is unused
    ("token_tis", (0.5, 2.0), [min(w, 2.0) for w in W]),
    # token MIS = IcePop: w inside [lo, C], else 0 (the ratio is kept, not set to 1)
    ("token_mis", (0.5, 2.0), [w if 0.5 <= w <= 2.0 else 0.0 for w in W]),
    ("token_mis", (0.5, 5.0), [w if 0.5 <= w <= 5.0 else 0.0 for w in W]),
    # sequence TIS: min(prod w, C) on every token; TRL's default sequence MIS (no lower, C_max 3)
    ("seq_tis", (0.5, 2.0), [min(1.8, 2.0)] * 3),
    ("seq_mis", (0.0, 3.0), [1.8] * 3),
    ("seq_mis", (0.0, 1.5), [0.0] * 3),
]


@pytest.mark.parametrize("mode,bounds,w_tilde", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_correction_weights_value_and_gradient(mode, bounds, w_tilde):
    """One update: rho = 1, so the token loss is -A * w~ and dL/dlogp_t = -A w~_t / 3; a zero
    weight keeps its token in the token-mean denominator."""
    rl = rl_config.RLConfig(
        rollout_correction=mode, rollout_clip_low=bounds[0], rollout_clip_high=bounds[1]
    )
    loss, grad, m = _value_and_grad(rl, PI_OLD, MU)
    w_tilde = np.asarray(w_tilde)
    assert loss == pytest.approx(-np.sum(w_tilde) / 3, abs=1e-5)
    np.testing.assert_allclose(grad, -w_tilde / 3, atol=1e-5)
    assert float(m["rl/is_weight_mean"]) == pytest.approx(np.mean(w_tilde), abs=1e-5)
    assert float(m["rl/is_weight_max"]) == pytest.approx(np.max(w_tilde), abs=1e-5)


def test_the_documented_numbers():
    """RESEARCH.md section 11.2's numbers, as printed."""
    cfg = lambda mode, lo=0.5, hi=2.0: rl_config.RLConfig(  # noqa: E731
        rollout_correction=mode, rollout_clip_low=lo, rollout_clip_high=hi
    )
    loss, grad, m = _value_and_grad(cfg("token_tis"), PI_OLD, MU)
    assert loss == pytest.approx(-1.3, abs=1e-5)
    np.testing.assert_allclose(grad, [-0.5, -0.1333, -0.6667], atol=1e-4)
    assert float(m["rl/is_oob_frac"]) == pytest.approx(1 / 3)  # 3.0 was truncated
    loss, _, m = _value_and_grad(cfg("token_mis"), PI_OLD, MU)
    assert loss == pytest.approx(-0.5, abs=1e-5)  # 1.5 / 3: the denominator stays 3
    assert float(m["rl/is_oob_frac"]) == pytest.approx(2 / 3)
    assert _value_and_grad(cfg("seq_tis"), PI_OLD, MU)[0] == pytest.approx(-1.8, abs=1e-5)
    assert _value_and_grad(cfg("seq_mis", 0.0, 1.5), PI_OLD, MU)[0] == 0.0


def test_mismatch_metrics_by_hand():
    m = mismatch.metrics(jnp.asarray(PI_OLD), jnp.asarray(MU), jnp.asarray(MASK))
    delta = np.log(W)
    assert float(m["rl/mismatch_kl"]) == pytest.approx(np.mean(-delta), abs=1e-5)
    assert float(m["rl/mismatch_k3"]) == pytest.approx(np.mean(W - 1 - delta), abs=1e-5)
    assert float(m["rl/mismatch_logp_abs_diff_mean"]) == pytest.approx(np.mean(abs(delta)), 1e-5)
    assert float(m["rl/mismatch_logp_abs_diff_max"]) == pytest.approx(np.log(3.0), abs=1e-5)


def test_sequence_log_weight_is_clamped_and_padding_is_ignored():
    mu = np.zeros((2, 4), np.float32)
    old = np.array([[30.0, 0, 0, 0], [1.0, 1.0, 99.0, 99.0]], np.float32)  # row 1: 2 tokens
    mask = np.array([[1, 0, 0, 0], [1, 1, 0, 0]], bool)
    rl = rl_config.RLConfig(rollout_correction="seq_mis", rollout_clip_low=0.0,
                            rollout_clip_high=1e12)  # fmt: skip
    w, _ = mismatch.weights(old, mu, mask, rl=rl)
    np.testing.assert_allclose(w[0, 0], np.exp(20.0), rtol=1e-5)  # clamped at +20, as verl
    np.testing.assert_allclose(w[1, :2], np.exp(2.0), rtol=1e-5)  # padding never enters the sum
    assert np.all(np.asarray(w)[~mask] == 0)


def test_decoupled_ratio_uses_the_recomputed_pi_old():
    """Several updates: rho = pi_theta / pi_old (the recomputed trainer log-probs), and the weight
    comes from pi_old / mu, both fixed; written out as PPO-clip times the TIS weight."""
    logps = (PI_OLD + np.array([[0.1, -0.3, 0.4]])).astype(np.float32)  # the policy has moved
    adv = np.array([[1.0, 1.0, 1.0]], np.float32)
    rl = rl_config.RLConfig(rollout_correction="token_tis", eps_low=0.2, eps_high=0.2)
    loss, grad, m = _value_and_grad(rl, logps, MU, adv, trainer_logps_BxT=PI_OLD)
    rho = np.exp(logps - PI_OLD)[0]
    w = np.minimum(W, 2.0)
    clipped = rho > 1.2  # A > 0: only the upper clip can act
    token = -np.minimum(rho, np.clip(rho, 0.8, 1.2)) * w
    assert loss == pytest.approx(np.mean(token), abs=1e-5)
    np.testing.assert_allclose(grad, np.where(clipped, 0.0, -rho * w / 3), atol=1e-5)
    # The metrics compare the sampler with the recomputed pi_old, not with the moved policy.
    assert float(m["rl/mismatch_logp_abs_diff_max"]) == pytest.approx(np.log(3.0), abs=1e-5)
    # Without the recompute the loss would use sg[logp] as pi_old: a different number.
    assert _value_and_grad(rl, logps, MU, adv)[0] != pytest.approx(loss, abs=1e-3)


def test_none_is_todays_bypass_loss_bit_for_bit():
    """rollout_correction='none': rho = pi_theta / mu exactly as before this change (trainer
    log-probs, if any, only feed the metrics)."""
    rng = np.random.default_rng(0)
    logps = rng.normal(-1.0, 0.3, (4, 6)).astype(np.float32)
    old = (logps + rng.normal(0, 0.3, (4, 6))).astype(np.float32)
    adv = np.repeat(rng.normal(size=(4, 1)), 6, axis=1).astype(np.float32)
    mask = rng.random((4, 6)) < 0.8
    sg = jax.lax.stop_gradient
    for rl in (rl_config.RLConfig(), rl_config.RLConfig(eps_high=0.28, dual_clip=3.0)):
        f = lambda lp, rl=rl, **kw: pl.policy_loss(lp, old, adv, mask, rl=rl, **kw)[0]  # noqa: E731
        got, g = jax.value_and_grad(f)(jnp.asarray(logps))
        again, g2 = jax.value_and_grad(lambda lp, f=f: f(lp, trainer_logps_BxT=logps + 1))(
            jnp.asarray(logps)
        )
        assert np.array_equal(got, again) and np.array_equal(g, g2)

        # Today's formula, by hand (same float32 operations, same order).
        def by_hand(lp, rl=rl):
            lp = jnp.where(mask, lp, 0.0)
            o, a = sg(jnp.where(mask, old, 0.0)), sg(jnp.where(mask, adv, 0.0))
            ratio = jnp.exp(lp - o)
            pg = jnp.maximum(-a * ratio, -a * jnp.clip(ratio, 1 - rl.eps_low, 1 + rl.eps_high))
            if rl.dual_clip is not None:
                pg = jnp.where(a < 0, jnp.minimum(pg, -a * rl.dual_clip), pg)
            pg = jnp.where(mask, pg, 0.0)
            return jnp.sum(pg) / jnp.maximum(jnp.sum(mask), 1).astype(jnp.float32)

        want, gw = jax.value_and_grad(by_hand)(jnp.asarray(logps))
        assert np.array_equal(got, want) and np.array_equal(g, gw)


# --- GSPO (section 11.3): log pi_theta - log pi_old = d, s = exp(mean d) ---
LOGP = np.array([[-0.5, -1.0, -2.0]], np.float32)


@pytest.mark.parametrize(
    "d,adv,loss,grad",
    [
        ([0.2, -0.1, 0.05], 1.0, -1.0004, 0.0),  # s = 1.05127 clipped at 1 + 4e-4: no gradient
        ([0.2, -0.1, 0.05], -1.0, 1.05127, 0.35042),  # A < 0: s is not clipped above
        ([3e-4, 1e-4, -1e-4], 1.0, -1.0001, -0.33337),  # s = 1.0001 in band
    ],
)
def test_gspo_worked_example(d, adv, loss, grad):
    rl = rl_config.RLConfig(
        policy_loss="gspo", eps_low=3e-4, eps_high=4e-4, loss_agg="seq_mean_token_mean"
    )
    old = (LOGP - np.asarray([d])).astype(np.float32)
    got, g, m = _value_and_grad(rl, LOGP, old, adv * ONES)
    # By hand: s = exp(mean d), token loss max(-A s, -A clip(s)), each token's gradient -A s / |y|
    # when unclipped.
    s = math.exp(np.mean(d))
    c = min(max(s, 1 - 3e-4), 1 + 4e-4)
    want = max(-adv * s, -adv * c)
    unclipped = -adv * s >= -adv * c
    assert got == pytest.approx(want, abs=1e-6) and got == pytest.approx(loss, abs=1e-4)
    np.testing.assert_allclose(g, [-adv * s / 3 if unclipped else 0.0] * 3, atol=1e-6)
    np.testing.assert_allclose(g, [grad] * 3, atol=1e-5)
    assert float(m["rl/ratio_mean"]) == pytest.approx(s, abs=1e-6)


def test_gspo_ratio_is_per_sequence_and_length_normalised():
    """Two rows of different lengths: each token's ratio is its own row's s_i."""
    old = np.zeros((2, 3), np.float32)
    logps = np.array([[0.3, 0.0, 0.0], [0.1, 0.2, 9.0]], np.float32)
    mask = np.array([[1, 1, 1], [1, 1, 0]], bool)
    adv = -np.ones((2, 3), np.float32)  # A < 0 and s > 1: never clipped
    rl = rl_config.RLConfig(policy_loss="gspo", loss_agg="seq_mean_token_mean")
    f = lambda lp: pl.policy_loss(lp, old, adv, mask, rl=rl)[0]  # noqa: E731
    loss, g = jax.value_and_grad(f)(jnp.asarray(logps))
    s = np.exp([0.1, 0.15])
    assert float(loss) == pytest.approx(np.mean(s), abs=1e-6)  # seq_mean_token_mean of s_i
    np.testing.assert_allclose(g, [[s[0] / 6] * 3, [s[1] / 4, s[1] / 4, 0.0]], atol=1e-6)


# --- CISPO (section 11.4): rho = [1.5, 1, 0.5], A = +1 ---
RHO = np.array([1.5, 1.0, 0.5])


@pytest.mark.parametrize(
    "eps_low,eps_high,loss",
    [(10.0, 0.2, 0.8667), (10.0, 4.0, 0.9167)],  # verl's example bounds; TRL's cap of 5
    ids=["verl", "trl_cap5"],
)
def test_cispo_worked_example(eps_low, eps_high, loss):
    rl = rl_config.RLConfig(policy_loss="cispo", eps_low=eps_low, eps_high=eps_high)
    got, g, _ = _value_and_grad(rl, LOGP, (LOGP - np.log(RHO)).astype(np.float32))
    r_hat = np.clip(RHO, 1 - eps_low, 1 + eps_high)
    assert got == pytest.approx(np.mean(-r_hat * LOGP[0]), abs=1e-5)  # -sg[r^] A logp
    assert got == pytest.approx(loss, abs=1e-4)
    np.testing.assert_allclose(g, -r_hat / 3, atol=1e-6)  # every token keeps its gradient
    if eps_high == 0.2:
        np.testing.assert_allclose(g, [-0.4, -0.3333, -0.1667], atol=1e-4)
        # PPO-clip at eps 0.2 drops the first token's gradient instead.
        ppo = rl_config.RLConfig()
        _, g_ppo, _ = _value_and_grad(ppo, LOGP, (LOGP - np.log(RHO)).astype(np.float32))
        np.testing.assert_allclose(g_ppo, [0.0, -0.3333, -0.1667], atol=1e-4)


# --- Config checks ---
@pytest.mark.parametrize(
    "kwargs,key",
    [
        (dict(rollout_correction="ice_pop"), "rollout_correction"),
        (dict(rollout_correction="token_tis", rollout_clip_low=1.5), "rollout_clip_low"),
        (dict(rollout_clip_high=0.9), "rollout_clip_high"),
        (dict(rollout_clip_low=-1.0), "rollout_clip_low"),
        (dict(policy_loss="gspo"), "loss_agg"),  # validated, not forced: token_mean is refused
        (dict(policy_loss="cispo", dual_clip=3.0), "dual_clip"),
        (dict(policy_loss="ppo_clip", eps_low=10.0), "eps_low"),  # only CISPO may drop the bound
    ],
)
def test_config_errors_name_the_key(kwargs, key):
    with pytest.raises(ValueError, match=f"RLConfig.{key}="):
        rl_config.RLConfig(**kwargs)


def test_icepop_is_token_mis_and_run_config_names_sections():
    # IcePop [0.5, 2] on the section 11.2 example: w = [1.5, 0.4, 3.0] -> [1.5, 0, 0].
    log_mu = jnp.asarray([[-1.2, -0.3, -2.0]])
    log_old = log_mu + jnp.log(jnp.asarray([[1.5, 0.4, 3.0]]))
    mask = jnp.ones((1, 3), bool)
    got = {
        mode: mismatch.weights(
            log_old, log_mu, mask, rl=rl_config.RLConfig(rollout_correction=mode)
        )[0]
        for mode in ("icepop", "token_mis")
    }
    np.testing.assert_allclose(got["icepop"], [[1.5, 0.0, 0.0]], rtol=1e-6)
    np.testing.assert_array_equal(got["icepop"], got["token_mis"])
    with pytest.raises(ConfigError, match="sampling: compute_dtype='fp8'"):
        run_config.from_dict({"sampling": {"compute_dtype": "fp8"}})
    with pytest.raises(ConfigError, match="rl: RLConfig.rollout_correction"):
        run_config.from_dict({"rl": {"rollout_correction": "tis"}})
    cfg = run_config.from_dict({"sampling": {"compute_dtype": "bfloat16"}})
    assert cfg.sampling.compute_dtype == "bfloat16"


# --- The train step, the recompute pass, the bf16 sampler ---
CFG = dataclasses.replace(config_lib.get_preset("tiny"), num_layers=2, vocab_size=64)
OPT = state_lib.make_optimizer(state_lib.OptConfig(lr=1e-2))


@pytest.fixture(scope="module")
def params():
    return params_lib.init_params(CFG, jax.random.key(0))


def _batch(params, B=4, Tp=6, Tc=6, noise=0.3):
    rng = np.random.default_rng(1)
    prompt = rng.integers(0, CFG.vocab_size, (B, Tp), dtype=np.int32)
    comp = rng.integers(0, CFG.vocab_size, (B, Tc), dtype=np.int32)
    prompt_mask = np.ones((B, Tp), bool)
    comp_mask = np.ones((B, Tc), bool)
    comp_mask[3, 2:] = False
    logps = forward_lib.make_logps_fn(model_cfg=CFG)(params, prompt, prompt_mask, comp, comp_mask)
    delta = rng.uniform(-noise, noise, (B, Tc)).astype(np.float32)  # mu = pi_old - delta
    adv = np.where(comp_mask, np.array([1.0, -1.0, 0.5, -0.5], np.float32)[:, None], 0.0)
    batch = batch_lib.TrainBatch(
        prompt_BxTp=prompt,
        prompt_mask_BxTp=prompt_mask,
        completion_BxTc=comp,
        completion_mask_BxTc=comp_mask,
        old_logps_BxTc=np.asarray(logps) - delta,
        adv_BxTc=adv.astype(np.float32),
    )
    return batch, np.asarray(logps), np.where(comp_mask, delta, 0.0)


@pytest.mark.parametrize("mode", rl_config.ROLLOUT_CORRECTIONS)
@pytest.mark.parametrize("loss", ["ppo_clip", "gspo", "cispo"])
def test_train_step_runs_every_mode_and_logs_the_metrics(params, mode, loss):
    """Two micro-batches: token means add up by token share, maxima combine by max."""
    batch, _, delta = _batch(params)
    agg = "seq_mean_token_mean" if loss == "gspo" else "token_mean"
    rl = rl_config.RLConfig(group_size=2, rollout_correction=mode, policy_loss=loss, loss_agg=agg)
    step = step_lib.make_train_step(
        model_cfg=CFG, objective=objective_lib.compose(rl), optimizer=OPT, num_micro=2
    )
    _, m = step(state_lib.init_state(jax.tree.map(jnp.copy, params), OPT), batch)
    mask = batch.completion_mask_BxTc
    assert float(m["train/skipped"]) == 0 and np.isfinite(float(m["train/loss"]))
    # One update: pi_old is this forward, so the mismatch is exactly the delta we put in.
    np.testing.assert_allclose(m["rl/mismatch_logp_abs_diff_max"], np.abs(delta).max(), atol=1e-5)
    np.testing.assert_allclose(
        m["rl/mismatch_logp_abs_diff_mean"], np.abs(delta)[mask].mean(), atol=1e-5
    )
    np.testing.assert_allclose(m["rl/mismatch_kl"], -delta[mask].mean(), atol=1e-5)
    if mode == "none":
        assert "rl/is_weight_mean" not in m
        return
    if mode.startswith("seq_"):
        w = np.repeat(np.exp(delta.sum(axis=1, keepdims=True)), delta.shape[1], axis=1)
    else:
        w = np.exp(delta)
    if mode.endswith("_tis"):
        w_tilde = np.minimum(w, 2.0)
    else:
        w_tilde = np.where((w < 0.5) | (w > 2.0), 0.0, w)
    np.testing.assert_allclose(m["rl/is_weight_mean"], w_tilde[mask].mean(), atol=1e-5)
    np.testing.assert_allclose(m["rl/is_weight_max"], w_tilde[mask].max(), atol=1e-5)
    # One update, rho = 1, A per row: the loss is -(A w~) aggregated (CISPO: -(A w~ logp)).
    if loss == "ppo_clip":
        want = -np.sum((batch.adv_BxTc * w_tilde)[mask]) / mask.sum()
        np.testing.assert_allclose(m["train/loss"], want, atol=1e-5)


def test_recompute_pass_fills_pi_old_once_for_several_updates(params):
    batch, logps, delta = _batch(params)
    mesh = mesh_lib.make_mesh((1, 1, 1), devices=jax.devices()[:1])
    hook = mismatch.TrainerLogps(
        forward_lib.make_logps_fn(model_cfg=CFG), 1, mesh, rollout_types.pad_rows
    )
    out, _ = hook.batch(None, batch, params)
    np.testing.assert_allclose(
        out.trainer_logps_BxTc[batch.completion_mask_BxTc],
        logps[batch.completion_mask_BxTc],
        atol=1e-6,
    )
    # The train step reads it: a pi_old shifted by 0.25 shows in the mismatch metrics (with
    # sg[logp] the difference from mu would be `delta` alone).
    shifted = out.replace(trainer_logps_BxTc=out.trainer_logps_BxTc + 0.25)
    rl = rl_config.RLConfig(group_size=2, rollout_correction="token_tis", num_updates=2)
    step = step_lib.make_train_step(
        model_cfg=CFG, objective=objective_lib.compose(rl), optimizer=OPT
    )
    _, m = step(state_lib.init_state(jax.tree.map(jnp.copy, params), OPT), shifted)
    mask = batch.completion_mask_BxTc
    np.testing.assert_allclose(m["rl/mismatch_kl"], -(delta[mask] + 0.25).mean(), atol=1e-5)


def test_bf16_sampler_disagrees_with_the_float32_trainer(params):
    """sampling.compute_dtype='bfloat16': the sampler's log-probs of its own tokens differ from
    the float32 trainer's; in float32 they agree to rounding."""
    run = types.SimpleNamespace(
        model_cfg=CFG, cfg=run_config.from_dict({"sampling": {"compute_dtype": "bfloat16"}})
    )
    bf16_cfg = build_lib.sampler_model_cfg(run)
    assert bf16_cfg.compute_dtype == "bfloat16" and CFG.compute_dtype == "float32"
    scfg = sampling.SamplingConfig(max_new_tokens=8, temperature=1.0, eos_ids=(), pad_id=0)
    prompts = [[1, 2, 3, 4], [5, 6, 7], [8, 9, 10, 11], [12, 13]]
    diffs = {}
    for name, model_cfg in (("bf16", bf16_cfg), ("f32", CFG)):
        out = sampling.generate(params, prompts, jax.random.key(0), model_cfg=model_cfg, cfg=scfg)
        trainer = forward_lib.make_logps_fn(model_cfg=CFG)(
            params, out.prompt_BxTp, out.prompt_mask_BxTp, out.tokens_BxTc, out.mask_BxTc
        )
        m = mismatch.metrics(trainer, out.logps_BxTc, out.mask_BxTc)
        diffs[name] = float(m["rl/mismatch_logp_abs_diff_mean"])
    assert diffs["bf16"] > 3e-4 and diffs["f32"] < 1e-5  # ~1.3e-3 and ~1e-7 here


def test_loop_bf16_sampler_with_correction_and_two_updates(tmp_path, monkeypatch):
    """End to end: a bf16 sampler, token TIS and two updates per batch; the recompute pass runs
    once per trained step and the metrics are logged."""
    calls = []
    batch_fn = mismatch.TrainerLogps.batch
    monkeypatch.setattr(
        mismatch.TrainerLogps, "batch", lambda self, *a: calls.append(1) or batch_fn(self, *a)
    )
    overrides = {
        "train.steps": 2,
        "eval.every": 0,
        "rl.num_updates": 2,
        "rl.rollout_correction": "token_tis",
        "sampling.compute_dtype": "bfloat16",
    }
    experiment.run(small_config(**overrides), str(tmp_path))
    rows = [r for r in metrics_lib.read_metrics(str(tmp_path)) if "rollout/reward_mean" in r]
    trained = [r for r in rows if r["rollout/prompts"] > 0]
    assert trained and len(calls) == len(trained)
    for r in trained:
        assert r["train/skipped"] == 0
        assert r["rl/mismatch_logp_abs_diff_mean"] > 1e-4  # bf16 sampler vs float32 trainer
        assert 0 < r["rl/is_weight_mean"] and r["rl/is_weight_max"] <= 2.0
        assert 0 <= r["rl/is_oob_frac"] <= 1
