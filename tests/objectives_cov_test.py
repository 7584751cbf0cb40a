"""KL-Cov and Clip-Cov (RLConfig.policy_loss) against verl's compute_policy_loss_kl_cov and
compute_policy_loss_clip_cov, written out in numpy; token selection by hand; config checks."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlvr_jax.objectives import cov, policy_loss, rl_config


def _batch():
    logps_BxT = jnp.array([[-0.1, -2.0, -0.5, 9.0], [-1.0, -0.2, -3.0, -0.7]])
    old_BxT = logps_BxT - jnp.array([[0.2, -0.3, 0.1, 5.0], [0.4, -0.6, 0.05, 0.2]])
    adv_BxT = jnp.array([[1.0, 1.0, 1.0, 50.0], [-1.0, -1.0, -1.0, -1.0]])
    mask_BxT = jnp.array([[1, 1, 1, 0], [1, 1, 1, 1]], bool)  # (0, 3): padding with huge values
    return logps_BxT, old_BxT, adv_BxT, mask_BxT


def _verl_kl_cov(logps, old, adv, mask, ratio, coef):
    """verl core_algos.compute_policy_loss_kl_cov, token-mean, in numpy."""
    logps, old, adv, mask = (np.asarray(x, np.float64) for x in (logps, old, adv, mask))
    neg_kl = logps - old
    pg = -adv * np.exp(neg_kl)  # no clip anywhere
    pg_kl = pg + coef * np.abs(neg_kl)
    valid = np.flatnonzero(mask.reshape(-1) > 0)
    a, lp = adv.reshape(-1)[valid], logps.reshape(-1)[valid]
    if min(ratio, len(a)) != 0:
        c = (a - a.mean()) * (lp - lp.mean())
        k = max(1, int(len(c) * ratio))
        top = valid[np.argsort(-c, kind="stable")[:k]]
        pg.reshape(-1)[top] = pg_kl.reshape(-1)[top]
    return np.sum(pg * mask) / mask.sum()


def test_kl_cov_selects_floor_count_by_hand():
    logps, _, adv, mask = _batch()
    lp = np.array([-0.1, -2.0, -0.5, -1.0, -0.2, -3.0, -0.7])  # the 7 valid tokens, row-major
    a = np.array([1.0, 1.0, 1.0, -1.0, -1.0, -1.0, -1.0])
    c = (lp - lp.mean()) * (a - a.mean())
    flat_valid = [0, 1, 2, 4, 5, 6, 7]
    # verl: k = max(1, floor(ratio * N)); ratio 0 selects nothing.
    for ratio, k in ((0.2, 1), (0.5, 3), (1 / 7, 1), (0.01, 1), (0.0, 0), (1.0, 7), (0.3, 2)):
        sel = cov.kl_cov_select(logps, adv, mask, ratio)
        expected = np.zeros(8, bool)
        expected[[flat_valid[i] for i in np.argsort(-c, kind="stable")[:k]]] = True
        np.testing.assert_array_equal(np.asarray(sel).reshape(-1), expected, err_msg=f"{ratio}")
    # By hand: the top token is (1, 2): logp -3 far below the mean (-15/14) with A below its mean
    # (-1/7), Cov = (-3 + 15/14)(-1 + 1/7) = 81/49.
    np.testing.assert_allclose(cov.token_covariance(logps, adv, mask)[1, 2], 81 / 49, rtol=1e-6)
    # Exact floor: 0.6 * 25 is 15 tokens (a float32 product could make it 14 or 16).
    ones_5x5 = jnp.ones((5, 5))
    assert int(cov.kl_cov_select(ones_5x5, ones_5x5, ones_5x5, 0.6).sum()) == 15
    assert int(cov.token_count(jnp.int32(1499), 0.002)) == 2  # floor(2.998); ceil would be 3
    assert int(cov.token_count(jnp.int32(0), 0.5)) == 0


def test_kl_cov_ties_and_padding():
    # All covariances equal (0): the lowest flat indices win; padding never does, even at k = N.
    logps = jnp.full((2, 3), -1.0)
    mask = jnp.array([[0, 1, 1], [1, 1, 0]], bool)
    sel = cov.kl_cov_select(logps, jnp.zeros((2, 3)), mask, 0.5)
    np.testing.assert_array_equal(sel, [[False, True, True], [False, False, False]])
    np.testing.assert_array_equal(cov.kl_cov_select(logps, jnp.zeros((2, 3)), mask, 1.0), mask)
    assert not cov.kl_cov_select(logps, logps, jnp.zeros((2, 3), bool), 1.0).any()


@pytest.mark.parametrize("ratio", [0.2, 0.5, 1.0])
def test_kl_cov_loss_and_gradient_match_verl(ratio):
    logps, old, adv, mask = _batch()
    logps = logps + 0.1  # off policy: the ratio is not 1, so a clip would matter
    rl = rl_config.RLConfig(group_size=2, policy_loss="kl_cov", kl_cov_ratio=ratio, kl_cov_coef=3.0)

    def loss(lp):
        return policy_loss.policy_loss(lp, old, adv, mask, rl=rl)[0]

    expected = _verl_kl_cov(logps, old, adv, mask, ratio, 3.0)
    np.testing.assert_allclose(float(loss(logps)), expected, rtol=1e-5)
    # The gradient of verl's loss, by central differences in float64.
    lp64, h = np.asarray(logps, np.float64), 1e-6
    num = np.zeros_like(lp64)
    for idx in zip(*np.nonzero(np.asarray(mask)), strict=True):
        up, down = lp64.copy(), lp64.copy()
        up[idx] += h
        down[idx] -= h
        num[idx] = (
            _verl_kl_cov(up, old, adv, mask, ratio, 3.0)
            - _verl_kl_cov(down, old, adv, mask, ratio, 3.0)
        ) / (2 * h)
    grad = jax.jit(jax.grad(loss))(logps.at[0, 3].set(jnp.nan))  # nan padding must not leak
    np.testing.assert_allclose(grad, num, rtol=1e-4, atol=1e-6)
    # The old behaviour (penalty on top of the PPO clip) gives another loss here.
    ppo = rl_config.RLConfig(group_size=2)
    clipped = float(policy_loss.policy_loss(logps, old, adv, mask, rl=ppo)[0])
    assert abs(clipped - expected) > 1e-2


def _verl_clip_cov(logps, old, adv, mask, chosen, eps):
    """verl core_algos.compute_policy_loss_clip_cov with the random pick given (`chosen`)."""
    logps, old, adv, mask = (np.asarray(x, np.float64) for x in (logps, old, adv, mask))
    ratio = np.exp(logps - old)
    pg1, pg2 = -adv * ratio, -adv * np.clip(ratio, 1 - eps, 1 + eps)
    corr = np.where(chosen, 0.0, 1.0)
    return np.sum(np.maximum(pg1, pg2) * corr * mask) / mask.sum()


def test_clip_cov_detaches_candidates_like_verl():
    # 2 rows x 6 tokens; Cov in (1, 5) only for a few tokens, none of them already clipped.
    logps = jnp.array([[-0.1, -4.0, -0.5, -0.3, -3.5, -0.2], [-0.4, -0.1, -5.0, -0.3, -0.2, -0.6]])
    old = logps - 0.01
    adv = jnp.array([[2.0] * 6, [-2.0] * 6])
    mask = jnp.ones((2, 6), bool)
    c = np.asarray(cov.token_covariance(logps, adv, mask))
    candidates = (c > 1.0) & (c < 5.0)
    assert 1 <= candidates.sum() < 12
    rl = rl_config.RLConfig(group_size=2, policy_loss="clip_cov", clip_cov_ratio=1.0)
    # ratio 1.0 -> clip_num = N >= #candidates: every candidate is detached, no randomness left.
    loss, m = policy_loss.policy_loss(logps, old, adv, mask, rl=rl, key=jax.random.key(0))
    expected = _verl_clip_cov(logps, old, adv, mask, candidates, 0.2)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    np.testing.assert_allclose(float(m["rl/clip_cov_frac"]), candidates.mean(), rtol=1e-6)
    grad = jax.grad(
        lambda lp: policy_loss.policy_loss(lp, old, adv, mask, rl=rl, key=jax.random.key(0))[0]
    )(logps)
    assert np.all(np.asarray(grad)[candidates] == 0) and np.all(np.asarray(grad)[~candidates] != 0)
    # A small ratio detaches exactly max(1, floor(ratio N)) of the candidates, chosen by the key.
    picks = set()
    for seed in range(8):
        sel = cov.clip_cov_select(
            logps,
            adv,
            mask,
            jnp.zeros((2, 6), bool),
            jax.random.key(seed),
            ratio=0.1,
            lb=1.0,
            ub=5.0,
        )
        assert int(sel.sum()) == 1 and bool(np.all(np.asarray(sel) <= candidates))
        picks.add(int(np.flatnonzero(np.asarray(sel))[0]))
    assert len(picks) > 1 or candidates.sum() == 1
    # Tokens the PPO clip already clipped are never candidates.
    assert not cov.clip_cov_select(
        logps, adv, mask, jnp.ones((2, 6), bool), jax.random.key(0), ratio=1.0, lb=1.0, ub=5.0
    ).any()
    with pytest.raises(ValueError, match="needs a PRNG key"):
        policy_loss.policy_loss(logps, old, adv, mask, rl=rl)


@pytest.mark.parametrize(
    "kw, field",
    [
        (dict(policy_loss="gpo"), "policy_loss"),
        (dict(kl_cov_ratio=1.5), "kl_cov_ratio"),
        (dict(kl_cov_coef=-0.1), "kl_cov_coef"),
        (dict(clip_cov_ratio=-0.1), "clip_cov_ratio"),
        (dict(clip_cov_lb=5.0, clip_cov_ub=1.0), "clip_cov_ub"),
        (dict(policy_loss="kl_cov", dual_clip=3.0), "dual_clip"),
    ],
)
def test_config_validation_names_the_field(kw, field):
    with pytest.raises(ValueError, match=f"RLConfig.{field}="):
        rl_config.RLConfig(**kw)


def test_defaults_are_the_papers_recipes():
    rl = rl_config.RLConfig()
    assert rl.policy_loss == "ppo_clip"
    assert (rl.kl_cov_ratio, rl.kl_cov_coef) == (0.002, 1.0)
    assert (rl.clip_cov_ratio, rl.clip_cov_lb, rl.clip_cov_ub) == (0.0002, 1.0, 5.0)
    hash(dataclasses.replace(rl, policy_loss="clip_cov"))  # still a static jit argument
