"""RLIF objectives: cluster voting on a hand table, self-certainty against numpy, GDPO by hand,
KL-Cov's top-k selection, padding and gradient, and RLIFConfig validation."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlvr_jax.objectives import advantages, rlif


def _num_equal(a: str, b: str) -> bool:
    """A tiny numeric normaliser: "2.0" == "2", else plain string equality after strip."""
    try:
        return float(a) == float(b)
    except ValueError:
        return a.strip() == b.strip()


def test_cluster_votes_hand_table():
    # Group 0 (G = 5): {2, 2.0, 2} is the majority, {3} alone, None votes for nothing.
    # Group 1: {x, x} and {y, y} tie; the first to appear ("x") wins under "first".
    answers = ["2", "3", "2.0", None, " 2", "x", "y", None, "y", "x"]
    ids, maj, soft = rlif.cluster_votes(answers, _num_equal, G=5)
    np.testing.assert_array_equal(ids, [0, 1, 0, -1, 0, 0, 1, -1, 1, 0])
    np.testing.assert_array_equal(maj, [1, 0, 1, 0, 1, 1, 0, 0, 0, 1])
    np.testing.assert_allclose(soft, [3 / 5, 1 / 5, 3 / 5, 0, 3 / 5, 2 / 5, 2 / 5, 0, 2 / 5, 2 / 5])
    _, maj_none, _ = rlif.cluster_votes(answers, _num_equal, G=5, tie_break="none")
    np.testing.assert_array_equal(maj_none, [1, 0, 1, 0, 1, 0, 0, 0, 0, 0])
    # String equality alone: every answer is its own cluster, and the first one wins the tie.
    ids_s, maj_s, _ = rlif.cluster_votes(answers[:5], lambda a, b: a == b)
    np.testing.assert_array_equal(ids_s, [0, 1, 2, -1, 3])
    np.testing.assert_array_equal(maj_s, [1, 0, 0, 0, 0])


def test_cluster_votes_edge_cases():
    ids, maj, soft = rlif.cluster_votes([None, None, None], lambda a, b: a == b)
    np.testing.assert_array_equal(ids, [-1, -1, -1])
    assert maj.sum() == 0 and soft.sum() == 0
    calls = []
    rlif.cluster_votes(["a", "a", "b"], lambda a, b: calls.append((a, b)) or False)
    assert calls == [("b", "a")]  # identical strings join without a call
    with pytest.raises(ValueError, match="multiple of G"):
        rlif.cluster_votes(["a", "b", "c"], _num_equal, G=2)


def test_self_certainty_matches_numpy():
    logits_BxTxV = jax.random.normal(jax.random.key(0), (3, 4, 7)) * 2.0
    mask_BxT = jnp.array([[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]], bool)
    logits = np.asarray(logits_BxTxV, np.float64)
    logp = logits - logits.max(-1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
    per_tok = -np.mean(np.log(7 * np.exp(logp)), axis=-1)  # KL(U || pi) per position
    m = np.asarray(mask_BxT, np.float64)
    expected = (per_tok * m).sum(1) / np.maximum(m.sum(1), 1)
    sc_B = rlif.self_certainty(logits_BxTxV, mask_BxT)
    assert sc_B.dtype == jnp.float32
    np.testing.assert_allclose(sc_B, expected, rtol=1e-5, atol=1e-6)
    assert sc_B[2] == 0.0  # empty row
    # Padding may hold nan; a peaked distribution is more certain than a flat one.
    nan_logits = logits_BxTxV.at[1, 2].set(jnp.nan)
    np.testing.assert_allclose(rlif.self_certainty(nan_logits, mask_BxT), expected, rtol=1e-5)


def test_self_certainty_zero_for_uniform():
    logits = jnp.full((2, 3, 11), 4.5, jnp.bfloat16)
    sc = rlif.self_certainty(logits, jnp.ones((2, 3), bool))
    np.testing.assert_allclose(sc, 0.0, atol=1e-6)
    peaked = jnp.zeros((1, 1, 11)).at[0, 0, 3].set(10.0)
    assert rlif.self_certainty(peaked, jnp.ones((1, 1))) > 1.0


def test_gdpo_by_hand():
    # B = 4, G = 2, R = 2 rewards, w = (1, 0.25), eps = 0.
    rewards_BxR = jnp.array([[1.0, 0.2], [0.0, 0.8], [1.0, 0.5], [1.0, 0.1]])
    # Reward 0: group 0 mean 0.5 std 0.5 -> (1, -1); group 1 is flat -> (0, 0).
    # Reward 1: group 0 mean 0.5 std 0.3 -> (-1, 1); group 1 mean 0.3 std 0.2 -> (1, -1).
    # S = (1 - 0.25, -1 + 0.25, 0.25, -0.25); mean 0, std sqrt((2 * 0.5625 + 2 * 0.0625) / 4).
    S = np.array([0.75, -0.75, 0.25, -0.25])
    expected = S / math.sqrt(0.3125)
    adv = rlif.gdpo_advantages(rewards_BxR, (1.0, 0.25), G=2, eps=0.0)
    assert adv.dtype == jnp.float32
    np.testing.assert_allclose(adv, expected, rtol=1e-6)
    # Default eps = 1e-6 only nudges the result; jit gives the same.
    jitted = jax.jit(rlif.gdpo_advantages, static_argnames="G")
    np.testing.assert_allclose(
        jitted(rewards_BxR, jnp.array([1.0, 0.25]), G=2), expected, rtol=1e-5
    )


def test_gdpo_keeps_reward_combinations_apart():
    # GRPO on the summed reward gives (1, 0) and (0, 1) the same advantage; GDPO need not.
    rewards_BxR = jnp.array([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0], [0.0, 0.5]])
    summed = advantages.grpo(rewards_BxR.sum(1), 2, 0.0)
    np.testing.assert_allclose(summed[0], summed[2], rtol=1e-6)
    gdpo = rlif.gdpo_advantages(rewards_BxR, (1.0, 0.5), G=2)
    assert abs(float(gdpo[0] - gdpo[2])) > 0.5
    flat = rlif.gdpo_advantages(jnp.ones((4, 2)), (1.0, 1.0), G=2)
    np.testing.assert_array_equal(flat, 0.0)  # every group flat: all zero, no nan


def _kl_cov_batch():
    logps_BxT = jnp.array([[-0.1, -2.0, -0.5, 9.0], [-1.0, -0.2, -3.0, -0.7]])
    old_BxT = logps_BxT - jnp.array([[0.2, -0.3, 0.1, 5.0], [0.4, -0.6, 0.05, 0.2]])
    adv_BxT = jnp.array([[1.0, 1.0, 1.0, 50.0], [-1.0, -1.0, -1.0, -1.0]])
    mask_BxT = jnp.array([[1, 1, 1, 0], [1, 1, 1, 1]], bool)  # (0, 3): padding with huge values
    return logps_BxT, old_BxT, adv_BxT, mask_BxT


def test_kl_cov_selects_top_k_by_hand():
    logps, old, adv, mask = _kl_cov_batch()
    lp = np.array([-0.1, -2.0, -0.5, -1.0, -0.2, -3.0, -0.7])  # the 7 valid tokens, row-major
    a = np.array([1.0, 1.0, 1.0, -1.0, -1.0, -1.0, -1.0])
    cov = (lp - lp.mean()) * (a - a.mean())
    flat_valid = [0, 1, 2, 4, 5, 6, 7]  # their positions in the flattened 2x4 batch
    for k_frac, k in ((0.2, 2), (0.5, 4), (1 / 7, 1), (0.0, 0), (1.0, 7)):  # k = ceil(k_frac*7)
        pen, sel = rlif.kl_cov_penalty(logps, old, adv, mask, k_frac, coef=2.0)
        expected = np.zeros(8, bool)
        expected[[flat_valid[i] for i in np.argsort(-cov, kind="stable")[:k]]] = True
        np.testing.assert_array_equal(np.asarray(sel).reshape(-1), expected, err_msg=f"{k_frac}")
        diff = np.abs(np.asarray(logps - old, np.float64)).reshape(-1)
        np.testing.assert_allclose(np.asarray(pen).reshape(-1), 2.0 * diff * expected, rtol=1e-6)
    # By hand: the top token is (1, 2): logp -3 far below the mean (-15/14) with A below its mean
    # (-1/7), Cov = (-3 + 15/14)(-1 + 1/7) = 81/49; then (0, 0): (-0.1 + 15/14)(1 + 1/7) = 1.11.
    np.testing.assert_array_equal(np.argsort(-cov)[:2], [5, 0])
    np.testing.assert_allclose(cov[5], 81 / 49, rtol=1e-12)
    # Exact ceil: 0.6 * 25 is 15 tokens; ceil(float32(0.6) * 25) would be 16.
    ones_5x5 = jnp.ones((5, 5))
    _, sel = rlif.kl_cov_penalty(ones_5x5, ones_5x5, ones_5x5, ones_5x5, 0.6, 1.0)
    assert int(sel.sum()) == 15


def test_kl_cov_ties_and_padding():
    # All covariances equal (0): the lowest flat indices win; padding never does, even at k=N.
    logps = jnp.full((2, 3), -1.0)
    mask = jnp.array([[0, 1, 1], [1, 1, 0]], bool)
    _, sel = rlif.kl_cov_penalty(logps, logps, jnp.zeros((2, 3)), mask, 0.5, 1.0)
    np.testing.assert_array_equal(sel, [[False, True, True], [False, False, False]])
    _, sel = rlif.kl_cov_penalty(logps, logps, jnp.zeros((2, 3)), mask, 1.0, 1.0)
    np.testing.assert_array_equal(sel, mask)
    pen, sel = rlif.kl_cov_penalty(logps, logps, logps, jnp.zeros((2, 3), bool), 1.0, 1.0)
    assert not sel.any() and float(pen.sum()) == 0.0


def test_kl_cov_gradient_only_through_selected():
    logps, old, adv, mask = _kl_cov_batch()
    logps = logps.at[0, 3].set(jnp.nan)  # nan padding must not leak into the gradient

    def loss(lp):
        pen, _ = rlif.kl_cov_penalty(lp, old, adv, mask, 0.5, 3.0)
        return jnp.sum(pen)

    grad = jax.jit(jax.grad(loss))(logps)
    _, sel = rlif.kl_cov_penalty(logps, old, adv, mask, 0.5, 3.0)
    sign = np.sign(np.asarray(logps - old))
    expected = np.where(np.asarray(sel), 3.0 * sign, 0.0)
    np.testing.assert_allclose(grad, expected, rtol=1e-6)
    assert int(sel.sum()) == 4 and np.all(np.isfinite(grad))


@pytest.mark.parametrize(
    "kw, field",
    [
        (dict(rewards=("cluster_vote", "bogus")), "rewards"),
        (dict(rewards=(), weights=()), "rewards"),
        (dict(rewards=("self_certainty", "self_certainty")), "rewards"),
        (dict(weights=(1.0,)), "weights"),
        (dict(weights=(0.0, 0.0)), "weights"),
        (dict(weights=(1.0, math.nan)), "weights"),
        (dict(soft_share=1), "soft_share"),
        (dict(tie_break="random"), "tie_break"),
        (dict(adv_eps=-1.0), "adv_eps"),
        (dict(kl_cov_k_frac=1.5), "kl_cov_k_frac"),
        (dict(kl_cov_coef=-0.1), "kl_cov_coef"),
    ],
)
def test_config_validation_names_the_field(kw, field):
    with pytest.raises(ValueError, match=f"RLIFConfig.{field}="):
        rlif.RLIFConfig(**kw)


def test_config_defaults_and_lists():
    cfg = rlif.RLIFConfig(rewards=["cluster_vote"], weights=[1.0])
    assert cfg.rewards == ("cluster_vote",) and isinstance(cfg.weights, tuple)
    hash(cfg)  # a static jit argument
    default = rlif.RLIFConfig()
    assert default.kl_cov_k_frac == 0.002 and default.kl_cov_coef == 1.0
