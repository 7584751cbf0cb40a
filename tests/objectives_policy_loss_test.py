"""Policy loss: on-policy value and gradient, KL estimators, aggregation by hand, padding
invariance, PPO clipping and dual clip, metrics, logits helpers, jit."""

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlvr_jax.objectives import policy_loss as pl
from rlvr_jax.objectives import rl_config

MODES = rl_config.LOSS_AGGS
RL = rl_config.RLConfig(group_size=2, norm_len=4)


def _batch(key, B=4, T=5):
    k1, k2, k3, k4 = jax.random.split(key, 4)
    logps_BxT = -jax.random.uniform(k1, (B, T), minval=0.1, maxval=3.0)
    old_BxT = logps_BxT + 0.3 * jax.random.normal(k2, (B, T))
    adv_BxT = jnp.broadcast_to(jax.random.normal(k3, (B,))[:, None], (B, T))
    lengths_B = jax.random.randint(k4, (B,), 1, T + 1).at[-1].set(0)  # last row: all padding
    mask_BxT = jnp.arange(T)[None, :] < lengths_B[:, None]
    return logps_BxT, old_BxT, adv_BxT, mask_BxT


def _loss(logps_BxT, *args, rl, **kw):
    return pl.policy_loss(logps_BxT, *args, rl=dataclasses.replace(RL, **rl), **kw)[0]


def test_aggregate_by_hand():
    x_BxT = jnp.array([[1.0, 2.0, 3.0], [4.0, 50.0, 60.0], [9.0, 9.0, 9.0]])
    mask_BxT = jnp.array([[1, 1, 1], [1, 0, 0], [0, 0, 0]])
    assert pl.aggregate(x_BxT, mask_BxT, "token_mean") == pytest.approx(10 / 4)
    assert pl.aggregate(x_BxT, mask_BxT, "seq_mean_token_mean") == pytest.approx((2 + 4) / 2)
    agg = pl.aggregate(x_BxT, mask_BxT, "seq_mean_token_sum_norm", norm_len=4)
    assert agg == pytest.approx(10 / (3 * 4))
    for mode in MODES:  # nothing to average: 0, not nan
        assert pl.aggregate(x_BxT, jnp.zeros_like(mask_BxT), mode, norm_len=4) == 0.0
    with pytest.raises(ValueError, match="norm_len"):
        pl.aggregate(x_BxT, mask_BxT, "seq_mean_token_sum_norm")


@pytest.mark.parametrize("mode", MODES)
def test_on_policy_loss_is_minus_mean_advantage(mode):
    _, _, adv_BxT, mask_BxT = _batch(jax.random.key(1))
    logps_BxT = _batch(jax.random.key(1))[0]
    rl = dict(loss_agg=mode)
    vg = jax.jit(jax.value_and_grad(functools.partial(_loss, rl=rl)))
    loss, grad_BxT = vg(logps_BxT, logps_BxT, adv_BxT, mask_BxT)
    a, m = np.asarray(adv_BxT, np.float64), np.asarray(mask_BxT, np.float64)
    if mode == "token_mean":
        weight_BxT = m / m.sum()
    elif mode == "seq_mean_token_mean":
        n_B = m.sum(1)
        weight_BxT = m / np.maximum(n_B, 1)[:, None] / (n_B > 0).sum()
    else:
        weight_BxT = m / (m.shape[0] * 4)
    np.testing.assert_allclose(loss, -(a * weight_BxT).sum(), rtol=1e-6)
    # On-policy, d ratio / d logp = 1: the gradient is -A times the token's aggregation weight.
    np.testing.assert_allclose(grad_BxT, -a * weight_BxT, rtol=1e-6, atol=1e-7)


def test_on_policy_small_table_by_hand():
    adv_BxT = jnp.array([[1.0, 1.0, 1.0], [-0.5, -0.5, -0.5], [2.0, 2.0, 2.0]])
    mask_BxT = jnp.array([[1, 1, 1], [1, 0, 0], [1, 1, 0]])
    logps_BxT = jnp.full((3, 3), -1.0)
    loss = _loss(logps_BxT, logps_BxT, adv_BxT, mask_BxT, rl={})
    assert loss == pytest.approx(-(3.0 - 0.5 + 4.0) / 6)


def test_kl_estimators_by_hand():
    # pi_theta = 1/2, pi_ref = 1/4 at the sampled token: log r = log(1/2).
    logps_BxT, ref_BxT = jnp.full((1, 1), math.log(0.5)), jnp.full((1, 1), math.log(0.25))
    l2 = math.log(2.0)
    expected = {"k1": l2, "k2": 0.5 * l2**2, "k3": 0.5 - 1 + l2, "k3+": 0.5 - 1 + l2}
    for estimator, value in expected.items():
        assert pl.kl(logps_BxT, ref_BxT, estimator)[0, 0] == pytest.approx(value, rel=1e-6)
    with pytest.raises(ValueError, match="k4"):
        pl.kl(logps_BxT, ref_BxT, "k4")


@pytest.mark.parametrize("estimator", rl_config.KL_ESTIMATORS)
def test_kl_is_exactly_zero_when_policy_is_reference(estimator):
    logps_BxT, old_BxT, adv_BxT, mask_BxT = _batch(jax.random.key(2))
    np.testing.assert_array_equal(pl.kl(logps_BxT, logps_BxT, estimator), 0.0)
    rl = dataclasses.replace(RL, beta=0.1, kl_estimator=estimator)
    with_ref = pl.policy_loss(logps_BxT, old_BxT, adv_BxT, mask_BxT, rl=rl, ref_logps_BxT=logps_BxT)
    assert with_ref[1]["rl/kl"] == 0.0
    without = pl.policy_loss(
        logps_BxT, old_BxT, adv_BxT, mask_BxT, rl=dataclasses.replace(rl, beta=0)
    )
    assert with_ref[0] == without[0]


def test_k3_plus_has_k3_value_and_k2_gradient():
    logps_BxT, ref_BxT, _, mask_BxT = _batch(jax.random.key(3))

    def kl_loss(logps_BxT, estimator):
        return pl.aggregate(pl.kl(logps_BxT, ref_BxT, estimator), mask_BxT, "token_mean")

    k3_value = kl_loss(logps_BxT, "k3")
    k3p_value, k3p_grad = jax.value_and_grad(kl_loss)(logps_BxT, "k3+")
    k2_value, k2_grad = jax.value_and_grad(kl_loss)(logps_BxT, "k2")
    assert k3p_value == pytest.approx(float(k3_value), rel=1e-6) and k3p_value != k2_value
    np.testing.assert_allclose(k3p_grad, k2_grad, rtol=1e-6)
    assert not np.allclose(jax.grad(kl_loss)(logps_BxT, "k3"), k2_grad)


@pytest.mark.parametrize("mode", MODES)
def test_padding_never_changes_loss_or_grads(mode):
    logps_BxT, old_BxT, adv_BxT, mask_BxT = _batch(jax.random.key(4))
    ref_BxT, ent_BxT = old_BxT - 0.1, -logps_BxT
    rl = dict(loss_agg=mode, beta=0.05, kl_estimator="k3+", entropy_coef=0.01, dual_clip=3.0)
    args = (logps_BxT, old_BxT, adv_BxT, mask_BxT, ref_BxT, ent_BxT)

    def loss_fn(logps, old, adv, mask, ref, ent):
        return _loss(logps, old, adv, mask, rl=rl, ref_logps_BxT=ref, entropy_BxT=ent)

    # Garbage in 3 extra columns and in the masked slots: overflowing exp, nan, inf.
    garbage = (1e4, -1e4, jnp.nan, 0, jnp.inf, jnp.nan)
    pairs = zip(args, garbage, strict=True)
    padded = [jnp.pad(x, ((0, 0), (0, 3)), constant_values=g) for x, g in pairs]
    padded[:3] = [jnp.where(padded[3], x, g) for x, g in zip(padded[:3], garbage[:3], strict=True)]
    loss, grad_BxT = jax.jit(jax.value_and_grad(loss_fn))(*args)
    loss_pad, grad_pad = jax.jit(jax.value_and_grad(loss_fn))(*padded)
    # Equal up to float summation order (a jitted reduction over more columns may reassociate).
    assert np.isfinite(loss) and loss_pad == pytest.approx(float(loss), rel=1e-6)
    np.testing.assert_allclose(grad_pad[:, :5], grad_BxT, rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(grad_pad[:, 5:], 0.0)


def test_clipped_tokens_have_zero_gradient():
    # Token ratios 1.5, 0.5, 1.5, 0.5, 1.25 with advantages +1, -1, -1, +1, +1; eps 0.2 / 0.28.
    ratio = jnp.array([[1.5, 0.5, 1.5, 0.5, 1.25]])
    adv_BxT = jnp.array([[1.0, -1.0, -1.0, 1.0, 1.0]])
    old_BxT = jnp.full((1, 5), -2.0)
    mask_BxT = jnp.ones((1, 5), bool)
    rl = dataclasses.replace(RL, eps_high=0.28)
    fn = functools.partial(pl.policy_loss, rl=rl)
    (loss, metrics), grad = jax.jit(jax.value_and_grad(fn, has_aux=True))(
        old_BxT + jnp.log(ratio), old_BxT, adv_BxT, mask_BxT
    )
    # 1 clipped above (A>0), 2 clipped below (A<0); 3, 4, 5 are unclipped: grad = -A*ratio/5.
    np.testing.assert_allclose(grad, [[0.0, 0.0, 1.5 / 5, -0.5 / 5, -1.25 / 5]], rtol=1e-6)
    assert loss == pytest.approx((-1.28 + 0.8 + 1.5 - 0.5 - 1.25) / 5, rel=1e-6)
    assert metrics["rl/clip_frac"] == pytest.approx(0.4)
    assert metrics["rl/clip_frac_high"] == pytest.approx(0.2)
    assert metrics["rl/clip_frac_low"] == pytest.approx(0.2)
    assert metrics["rl/ratio_max"] == pytest.approx(1.5)
    assert metrics["rl/ratio_mean"] == pytest.approx(5.25 / 5)
    k3 = sum(r - 1 - math.log(r) for r in (1.5, 0.5, 1.5, 0.5, 1.25)) / 5
    assert metrics["rl/approx_kl"] == pytest.approx(k3, rel=1e-5)
    assert metrics["rl/pg_loss"] == loss


def test_dual_clip_caps_negative_advantage_loss():
    ratio = jnp.array([[5.0, 5.0, 2.0]])
    adv_BxT = jnp.array([[-1.0, 1.0, -1.0]])
    old_BxT, mask_BxT = jnp.zeros((1, 3)), jnp.ones((1, 3))
    logps_BxT = jnp.log(ratio)
    fn = functools.partial(pl.policy_loss, rl=dataclasses.replace(RL, dual_clip=3.0))
    (loss, metrics), grad = jax.jit(jax.value_and_grad(fn, has_aux=True))(
        logps_BxT, old_BxT, adv_BxT, mask_BxT
    )
    # Token 1: |A|*ratio = 5 capped at 3 (no gradient); token 2: A > 0, clip at 1.2; token 3: 2.
    assert loss == pytest.approx((3.0 - 1.2 + 2.0) / 3, rel=1e-6)
    np.testing.assert_allclose(grad, [[0.0, 0.0, 2.0 / 3]], rtol=1e-6)
    assert metrics["rl/dual_clip_frac"] == pytest.approx(1 / 3)
    no_dual = _loss(logps_BxT, old_BxT, adv_BxT, mask_BxT, rl={})
    assert no_dual == pytest.approx((5.0 - 1.2 + 2.0) / 3, rel=1e-6)


def test_entropy_bonus_and_metric():
    logps_BxT, _, adv_BxT, mask_BxT = _batch(jax.random.key(5))
    ent_BxT = jnp.full(logps_BxT.shape, 2.0)
    base = _loss(logps_BxT, logps_BxT, adv_BxT, mask_BxT, rl={})
    loss, metrics = pl.policy_loss(
        logps_BxT,
        logps_BxT,
        adv_BxT,
        mask_BxT,
        rl=dataclasses.replace(RL, entropy_coef=0.1),
        entropy_BxT=ent_BxT,
    )
    assert loss == pytest.approx(float(base) - 0.2, rel=1e-6) and metrics["rl/entropy"] == 2.0
    with pytest.raises(ValueError, match="entropy_BxT"):
        _loss(logps_BxT, logps_BxT, adv_BxT, mask_BxT, rl=dict(entropy_coef=0.1))
    with pytest.raises(ValueError, match="ref_logps_BxT"):
        _loss(logps_BxT, logps_BxT, adv_BxT, mask_BxT, rl=dict(beta=0.1))


def test_logits_helpers_in_float32():
    logits_BxTxV = jnp.zeros((2, 3, 8), jnp.bfloat16).at[0, 0, 5].set(jnp.inf * -1)
    tokens_BxT = jnp.array([[1, 2, 3], [4, 5, 6]])
    logps_BxT = pl.token_logps(logits_BxTxV, tokens_BxT)
    ent_BxT = pl.entropy(logits_BxTxV)
    assert logps_BxT.dtype == ent_BxT.dtype == jnp.float32
    np.testing.assert_allclose(logps_BxT[1], -math.log(8), rtol=1e-6)
    np.testing.assert_allclose(logps_BxT[0, 0], -math.log(7), rtol=1e-6)  # one banned token
    np.testing.assert_allclose(ent_BxT[1], math.log(8), rtol=1e-6)
    np.testing.assert_allclose(ent_BxT[0, 0], math.log(7), rtol=1e-6)


def test_policy_loss_jits_with_static_config():
    logps_BxT, old_BxT, adv_BxT, mask_BxT = _batch(jax.random.key(6))
    rl = dataclasses.replace(RL, beta=0.04, loss_agg="seq_mean_token_mean", dual_clip=3.0)
    kw = dict(ref_logps_BxT=old_BxT, entropy_BxT=-logps_BxT)
    eager = pl.policy_loss(logps_BxT, old_BxT, adv_BxT, mask_BxT, rl=rl, **kw)
    jitted = jax.jit(pl.policy_loss, static_argnames="rl")(
        logps_BxT, old_BxT, adv_BxT, mask_BxT, rl=rl, **kw
    )
    chex_keys = {"rl/kl", "rl/entropy", "rl/pg_loss", "rl/clip_frac", "rl/approx_kl"}
    assert chex_keys <= set(jitted[1])
    for key, value in eager[1].items():
        assert jitted[1][key].dtype == jnp.float32 and jitted[1][key].shape == ()
        np.testing.assert_allclose(jitted[1][key], value, rtol=1e-6)
    np.testing.assert_allclose(jitted[0], eager[0], rtol=1e-6)
