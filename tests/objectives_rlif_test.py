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
    adv = rlif.gdpo_advantages(rewards_BxR, (1.0, 0.25), G=2, eps=0.0, ddof=0)
    assert adv.dtype == jnp.float32
    np.testing.assert_allclose(adv, expected, rtol=1e-6)
    # Default eps = 1e-6 only nudges the result; jit gives the same.
    jitted = jax.jit(rlif.gdpo_advantages, static_argnames=("G", "ddof"))
    np.testing.assert_allclose(
        jitted(rewards_BxR, jnp.array([1.0, 0.25]), G=2, ddof=0), expected, rtol=1e-5
    )


def test_gdpo_default_uses_unbiased_stds_like_the_authors():
    """The GDPO authors' code normalises with torch's std (unbiased, ddof=1) in the group and over
    the batch; the reference below is that formula written out."""
    rewards_BxR = np.array([[1.0, 0.2], [0.0, 0.8], [1.0, 0.5], [1.0, 0.1], [0.0, 0.3], [1.0, 0.9]])
    w, G, eps = np.array([1.0, 0.25]), 3, 1e-6
    r_PxGxR = rewards_BxR.reshape(-1, G, 2)
    mean = r_PxGxR.mean(1, keepdims=True)
    std = r_PxGxR.std(1, ddof=1, keepdims=True)
    a_PxGxR = np.where(std > 0, (r_PxGxR - mean) / (std + eps), 0.0)
    S = (a_PxGxR.reshape(-1, 2) * w).sum(1)
    expected = (S - S.mean()) / (S.std(ddof=1) + eps)
    adv = rlif.gdpo_advantages(jnp.asarray(rewards_BxR), w, G=G)
    np.testing.assert_allclose(adv, expected, rtol=1e-5)
    # Population stds differ by sqrt(B/(B-1)) over the batch: the default is not that.
    pop = rlif.gdpo_advantages(jnp.asarray(rewards_BxR), w, G=G, ddof=0)
    assert abs(float(pop[0]) - expected[0]) > 0.02


def test_gdpo_keeps_reward_combinations_apart():
    # GRPO on the summed reward gives (1, 0) and (0, 1) the same advantage; GDPO need not.
    rewards_BxR = jnp.array([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0], [0.0, 0.5]])
    summed = advantages.grpo(rewards_BxR.sum(1), 2, 0.0)
    np.testing.assert_allclose(summed[0], summed[2], rtol=1e-6)
    gdpo = rlif.gdpo_advantages(rewards_BxR, (1.0, 0.5), G=2)
    assert abs(float(gdpo[0] - gdpo[2])) > 0.5
    flat = rlif.gdpo_advantages(jnp.ones((4, 2)), (1.0, 1.0), G=2)
    np.testing.assert_array_equal(flat, 0.0)  # every group flat: all zero, no nan


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
        (dict(adv_std_ddof=2), "adv_std_ddof"),
        (dict(adv_std_ddof=True), "adv_std_ddof"),
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
    assert default.adv_std_ddof == 1 and default.adv_eps == 1e-6
