"""DelTA coefficients: a hand example and a numpy reference from RESEARCH.md 2, shared vs. side-
specific tokens, bounds and normalisation, zero advantages, padding, chunked == direct, jit."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlvr_jax.objectives import delta

# One jitted entry point: eager dispatch of every op would dominate the test time.
coefficients = jax.jit(delta.coefficients, static_argnames=("iters", "chunk"))
share_of = jax.jit(delta.shared_token_weight_share)
SCALARS = (
    "delta/omega_mean",
    "delta/omega_std",
    "delta/omega_min",
    "delta/omega_max",
    "delta/gamma_pos",
    "delta/gamma_neg",
    "delta/centroid_dist",
    "delta/disc_bias",
    "delta/disc_acc",
)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _reference(v, adv, mask, lam_min=0.8, lam_max=1.2, iters=1):
    """RESEARCH.md 2 steps 3-7 in float64 numpy, over a flat list of the valid tokens."""
    v, adv, mask = np.asarray(v, np.float64), np.asarray(adv, np.float64), np.asarray(mask, bool)
    rows, cols = np.nonzero(mask)
    x, A = v[rows, cols], adv[rows]  # [N, D], [N]
    a_pos, a_neg = np.maximum(A, 0), np.maximum(-A, 0)
    pos, neg = A > 0, A < 0

    def mean_of(w):
        return (w[:, None] * x).sum(0) / max(w.sum(), 1e-8)

    def margins(mu_p, mu_n):
        d_p, d_n = ((x - mu_p) ** 2).sum(1), ((x - mu_n) ** 2).sum(1)
        m = np.where(pos, d_n - d_p, np.where(neg, d_p - d_n, 0.0))
        g_p = math.sqrt(max(np.var(m[pos]) if pos.any() else 0.0, 1e-8))
        g_n = math.sqrt(max(np.var(m[neg]) if neg.any() else 0.0, 1e-8))
        return m, np.where(pos, g_p, np.where(neg, g_n, 1.0))

    mu_p, mu_n = mean_of(a_pos), mean_of(a_neg)
    m, g = margins(mu_p, mu_n)
    for _ in range(iters):
        q = _sigmoid(m / g)
        mu_p, mu_n = mean_of(q * a_pos), mean_of(q * a_neg)
        m, g = margins(mu_p, mu_n)
    raw = np.where(pos | neg, lam_min + (lam_max - lam_min) * _sigmoid(m / g), lam_min)
    raw_BxT = np.zeros(mask.shape)
    raw_BxT[rows, cols] = raw
    return raw_BxT * len(raw) / raw.sum(), raw_BxT, np.linalg.norm(mu_p - mu_n)


def _batch(seed, B=6, T=7, D=5):
    """numpy data (eager jax ops on 8 fake devices are slow): v = (1 - p) h, adv, mask."""
    rng = np.random.default_rng(seed)
    v_BxTxD = (1 - rng.uniform(size=(B, T, 1))) * (rng.normal(size=(B, T, D)) + 0.5)
    adv_B = rng.normal(size=B)
    adv_B[1] = 0.0  # one zero-advantage completion
    lengths_B = rng.integers(2, T + 1, size=B)
    lengths_B[-1] = 0  # last row: all padding
    mask_BxT = np.arange(T)[None, :] < lengths_B[:, None]
    return v_BxTxD.astype(np.float32), adv_B.astype(np.float32), mask_BxT


def test_hand_example():
    # v: positive completion [(2,0), (0,0)], negative [(-2,0), (0,0)]; A = +1, -1.
    # mu+ = (1,0), mu- = (-1,0); margins 8 and 0 on each side; gamma = std(8, 0) = 4.
    # K=1: q = sigmoid(2), 1/2, so mu*+ = (2 s / (s + 1/2), 0) with s = sigmoid(2); the margin of
    # (+-2, 0) becomes 8 mu*+ and gamma 4 mu*+, so every ratio m / gamma stays 2 (or 0).
    v_BxTxD = np.array([[[2.0, 0.0], [0.0, 0.0]], [[-2.0, 0.0], [0.0, 0.0]]], np.float32)
    p_BxT = np.zeros((2, 2), np.float32)
    adv_B = np.array([1.0, -1.0], np.float32)
    mask_BxT = np.ones((2, 2), bool)
    s = _sigmoid(2.0)
    raw = np.array([[0.8 + 0.4 * s, 1.0], [0.8 + 0.4 * s, 1.0]])
    v_BxTxD = delta.token_grad_proxy(p_BxT, v_BxTxD)  # (1 - 0) * h
    for iters, dist in ((0, 2.0), (1, 4 * s / (s + 0.5))):
        omega_BxT, stats = coefficients(v_BxTxD, adv_B, mask_BxT, iters=iters)
        np.testing.assert_allclose(stats["omega_raw"], raw, rtol=1e-6)
        np.testing.assert_allclose(omega_BxT, raw / raw.mean(), rtol=1e-6)
        assert stats["delta/centroid_dist"] == pytest.approx(dist, rel=1e-6)
        assert stats["delta/gamma_pos"] == pytest.approx(2 * dist, rel=1e-6)
        assert stats["delta/disc_acc"] == pytest.approx(0.5)  # shared tokens sit at m = 0
        ref_omega, ref_raw, ref_dist = _reference(v_BxTxD, adv_B, mask_BxT, iters=iters)
        np.testing.assert_allclose(omega_BxT, ref_omega, rtol=1e-6)
        assert ref_dist == pytest.approx(dist)


def test_token_grad_proxy():
    h_BxTxD = jnp.arange(12, dtype=jnp.bfloat16).reshape(1, 3, 4)
    v_BxTxD = delta.token_grad_proxy(jnp.array([[0.0, 0.5, 1.0]]), h_BxTxD)
    assert v_BxTxD.dtype == jnp.float32
    np.testing.assert_allclose(v_BxTxD[0], [[0, 1, 2, 3], [2, 2.5, 3, 3.5], [0, 0, 0, 0]])


@pytest.mark.parametrize("iters", [0, 1, 3])
def test_matches_numpy_reference(iters):
    v_BxTxD, adv_B, mask_BxT = _batch(iters)
    omega_BxT, stats = coefficients(v_BxTxD, adv_B, mask_BxT, lam_min=0.5, lam_max=2.0, iters=iters)
    ref_omega, ref_raw, ref_dist = _reference(v_BxTxD, adv_B, mask_BxT, 0.5, 2.0, iters)
    np.testing.assert_allclose(omega_BxT, ref_omega, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats["omega_raw"], ref_raw, rtol=1e-5, atol=1e-6)
    assert stats["delta/centroid_dist"] == pytest.approx(ref_dist, rel=1e-5)


def test_bounds_normalisation_and_zero_advantage():
    v_BxTxD, adv_B, mask_BxT = _batch(1, B=8, T=9, D=6)
    adv_B[3] = 0.0
    omega_BxT, stats = coefficients(v_BxTxD, adv_B, mask_BxT, iters=2)
    raw_BxT, valid = np.asarray(stats["omega_raw"]), np.asarray(mask_BxT)
    assert raw_BxT[valid].min() >= 0.8 and raw_BxT[valid].max() <= 1.2
    assert np.all(raw_BxT[~valid] == 0) and np.all(np.asarray(omega_BxT)[~valid] == 0)
    assert np.sum(omega_BxT) / np.sum(mask_BxT) == pytest.approx(1.0, abs=1e-6)
    assert stats["delta/omega_mean"] == pytest.approx(1.0, abs=1e-6)
    for b in (1, 3):  # the zero-advantage completions
        np.testing.assert_array_equal(raw_BxT[b][valid[b]], np.float32(0.8))
    assert omega_BxT.dtype == jnp.float32 and all(stats[k].shape == () for k in SCALARS)
    mins = np.asarray(omega_BxT)[valid]
    assert stats["delta/omega_min"] == pytest.approx(mins.min())
    assert stats["delta/omega_max"] == pytest.approx(mins.max())
    assert stats["delta/omega_std"] == pytest.approx(mins.std(), abs=1e-6)


def _shared_batch(seed, D=8, T=6):
    """Two correct and two wrong completions. Tokens 0-2 of every completion are shared: the same
    three hidden vectors (and ids 10-12) on both sides; tokens 3-5 are side-specific (+-3 e_0)."""
    rng = np.random.default_rng(seed)
    shared_3xD = 0.3 * rng.normal(size=(3, D))
    sign_B = np.array([1.0, 1.0, -1.0, -1.0], np.float32)
    own_Bx3xD = 0.3 * rng.normal(size=(4, 3, D))
    own_Bx3xD[:, :, 0] += 3.0 * sign_B[:, None]
    v_BxTxD = np.concatenate([np.broadcast_to(shared_3xD, (4, 3, D)), own_Bx3xD], axis=1)
    own_ids_Bx3 = 100 + np.arange(12).reshape(4, 3)
    tokens_BxT = np.concatenate([np.broadcast_to(10 + np.arange(3), (4, 3)), own_ids_Bx3], 1)
    return v_BxTxD.astype(np.float32), sign_B, np.ones((4, T), bool), tokens_BxT


def test_shared_tokens_weigh_less_than_side_specific_ones():
    v_BxTxD, adv_B, mask_BxT, tokens_BxT = _shared_batch(0)
    omega_BxT, stats = coefficients(v_BxTxD, adv_B, mask_BxT)
    shared, own = np.asarray(omega_BxT[:, :3]), np.asarray(omega_BxT[:, 3:])
    assert own.min() > shared.max()
    assert own.min() > 1.0 > shared.max()
    assert stats["delta/disc_acc"] > 0.5
    # The weight share on shared tokens falls below their plain token share (1/2).
    share = share_of(omega_BxT, tokens_BxT, adv_B, mask_BxT)
    uniform = share_of(np.ones(omega_BxT.shape, np.float32), tokens_BxT, adv_B, mask_BxT)
    assert float(uniform) == pytest.approx(0.5)
    assert float(share) == pytest.approx(shared.sum() / (shared.sum() + own.sum()), rel=1e-6)
    assert float(share) < 0.5


def test_shared_token_weight_share_by_hand():
    tokens_BxT = np.array([[5, 7, 9, 0], [7, 8, 5, 5], [7, 9, 9, 3], [5, 1, 2, 9]])
    mask_BxT = np.array([[1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1]], bool)
    adv_B = np.array([1.0, -0.5, 0.0, 2.0], np.float32)  # row 2: zero advantage, not counted
    omega_BxT = np.array(
        [[1, 2, 3, 99], [4, 5, 6, 7], [50, 50, 50, 50], [8, 9, 10, 11]], np.float32
    )
    # Positive ids {5, 7, 9, 1, 2} (the padded 0 is not one); negative ids {7, 8, 5}: shared {5, 7}.
    shared = 1 + 2 + 4 + 6 + 7 + 8
    total = (1 + 2 + 3) + (4 + 5 + 6 + 7) + (8 + 9 + 10 + 11)
    share = share_of(omega_BxT, tokens_BxT, adv_B, mask_BxT)
    assert share.dtype == jnp.float32 and float(share) == pytest.approx(shared / total)
    # No negative completion: nothing is shared. No signed completion: 0, not nan.
    one_side = share_of(omega_BxT, tokens_BxT, np.abs(adv_B), mask_BxT)
    assert float(one_side) == 0.0
    assert float(share_of(omega_BxT, tokens_BxT, 0 * adv_B, mask_BxT)) == 0


def test_padding_changes_nothing():
    B, T, D, extra = 5, 6, 4, 3
    v_BxTxD, adv_B, mask_BxT = _batch(2, B=B, T=T, D=D)
    omega_BxT, stats = coefficients(v_BxTxD, adv_B, mask_BxT)
    # Garbage everywhere the mask is off, longer rows, and an extra all-padding row with A != 0.
    rng = np.random.default_rng(3)
    garbage_h = 1e3 * rng.normal(size=(B + 1, T + extra, D)).astype(np.float32)
    garbage_h[0, -1, 0], garbage_h[-1, 0, 1] = np.nan, np.inf
    garbage_p = 5.0 * rng.normal(size=(B + 1, T + extra)).astype(np.float32)
    mask2_BxT = np.zeros((B + 1, T + extra), bool)
    mask2_BxT[:B, :T] = mask_BxT
    v2_BxTxD = np.asarray(delta.token_grad_proxy(garbage_p, garbage_h))
    v2_BxTxD[:B, :T][mask_BxT] = v_BxTxD[mask_BxT]
    adv2_B = np.append(adv_B, np.float32(3.0))
    for chunk in (0, 4):
        omega2_BxT, stats2 = coefficients(v2_BxTxD, adv2_B, mask2_BxT, chunk=chunk)
        np.testing.assert_allclose(omega2_BxT[:B, :T], omega_BxT, rtol=1e-5, atol=1e-6)
        assert np.all(np.asarray(omega2_BxT)[~np.asarray(mask2_BxT)] == 0)
        for k in SCALARS:
            assert stats2[k] == pytest.approx(float(stats[k]), rel=1e-5, abs=1e-6), k


@pytest.mark.parametrize("chunk", [1, 3, 64])  # 3: the last chunk overlaps
def test_chunked_equals_direct_under_jit(chunk):
    v_BxTxD, adv_B, mask_BxT = _batch(4, B=6, T=7, D=16)
    omega_BxT, stats = coefficients(v_BxTxD, adv_B, mask_BxT, iters=2, chunk=0)
    omega_c_BxT, stats_c = coefficients(v_BxTxD, adv_B, mask_BxT, iters=2, chunk=chunk)
    np.testing.assert_allclose(omega_c_BxT, omega_BxT, atol=1e-5)
    np.testing.assert_allclose(stats_c["omega_raw"], stats["omega_raw"], atol=1e-5)
    for k in SCALARS:
        assert stats_c[k] == pytest.approx(float(stats[k]), rel=1e-4, abs=1e-5), k
    ref_omega, _, _ = _reference(v_BxTxD, adv_B, mask_BxT, iters=2)
    np.testing.assert_allclose(omega_c_BxT, ref_omega, atol=1e-5)


def test_one_sided_and_empty_batches_stay_finite():
    v_BxTxD, adv_B, mask_BxT = _batch(5)
    for adv in (np.abs(adv_B) + 0.1, np.zeros_like(adv_B)):
        omega_BxT, stats = coefficients(v_BxTxD, adv, mask_BxT)
        assert np.all(np.isfinite(omega_BxT)) and all(np.isfinite(stats[k]) for k in SCALARS)
        assert np.sum(omega_BxT) == pytest.approx(np.sum(mask_BxT), rel=1e-6)
    omega_BxT, stats = coefficients(v_BxTxD, adv_B, np.zeros_like(mask_BxT), chunk=3)
    assert np.all(omega_BxT == 0) and all(np.isfinite(stats[k]) for k in SCALARS)


def test_no_gradient_flows_through_the_coefficients():
    v_BxTxD, adv_B, mask_BxT = _batch(6)
    f = lambda v: jnp.sum(delta.coefficients(v, adv_B, mask_BxT)[0] ** 2)
    assert np.all(jax.jit(jax.grad(f))(v_BxTxD) == 0)


def test_config_validation():
    assert delta.DeltaConfig() == delta.DeltaConfig(enabled=False, lam_min=0.8, lam_max=1.2)
    hash(delta.DeltaConfig(enabled=True, iters=2, chunk=512))
    for bad, field in (
        (dict(enabled=1), "enabled"),
        (dict(lam_min=0.0), "lam_min"),
        (dict(lam_min=float("nan")), "lam_min"),
        (dict(lam_max=0.7), "lam_max"),
        (dict(iters=-1), "iters"),
        (dict(iters=1.0), "iters"),
        (dict(chunk=-4), "chunk"),
    ):
        with pytest.raises(ValueError, match=f"DeltaConfig.{field}="):
            delta.DeltaConfig(**bad)
    with pytest.raises(ValueError, match="chunk"):
        delta.coefficients(jnp.zeros((1, 2, 3)), jnp.zeros(1), jnp.ones((1, 2)), chunk=-1)
