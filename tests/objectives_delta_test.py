"""DelTA coefficients: a hand example, a transcription of the authors' released loop and a numpy
reference from docs/delta.md, shared vs. side-specific tokens, bounds and normalisation, zero
advantages, padding, chunked == direct, jit."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlvr_jax.objectives import delta

# One jitted entry point: eager dispatch of every op would dominate the test time.
coefficients = jax.jit(delta.coefficients, static_argnames=("iters", "chunk", "gamma"))
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
    """docs/delta.md steps 3-7 with gamma="current" (every gamma from the newest centroids), in
    float64 numpy, over a flat list of the valid tokens."""
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
        omega_BxT, stats = coefficients(v_BxTxD, adv_B, mask_BxT, iters=iters, gamma="current")
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
    omega_BxT, stats = coefficients(
        v_BxTxD, adv_B, mask_BxT, lam_min=0.5, lam_max=2.0, iters=iters, gamma="current"
    )
    ref_omega, ref_raw, ref_dist = _reference(v_BxTxD, adv_B, mask_BxT, 0.5, 2.0, iters)
    np.testing.assert_allclose(omega_BxT, ref_omega, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats["omega_raw"], ref_raw, rtol=1e-5, atol=1e-6)
    assert stats["delta/centroid_dist"] == pytest.approx(ref_dist, rel=1e-5)


def _reference_released(v, adv, mask, lam_min=0.8, lam_max=1.2, iters=1):
    """The authors' algorithm, transcribed from RUCBM/DelTA verl-DelTA/verl/workers/actor/
    dp_actor.py, DataParallelPPOActor.compute_log_prob_h (impl "Normal"; "Memory_efficient" only
    expands the distances), in float64 numpy on [B, T] arrays as their micro-batch loops see them.
    Their no-op knobs are dropped: d = ones (the diagonal metric is overwritten), lam_w = 1,
    gamma_time = 1. Returns (normalised and raw weights, gamma_pos, gamma_neg, ||mu+ - mu-||)."""
    eps = 1e-8
    mask = np.asarray(mask, bool)
    token_mask = mask.astype(np.float64)
    # Their padded v is finite (h of pad positions); ours may be garbage: zero it, it is masked.
    v = np.where(mask[..., None], np.asarray(v, np.float64), 0.0)
    adv = np.asarray(adv, np.float64)
    pos_seq_mask = (adv > 0).astype(np.float64)[:, None]
    neg_seq_mask = (adv < 0).astype(np.float64)[:, None]
    valid_pos_mask, valid_neg_mask = pos_seq_mask * token_mask, neg_seq_mask * token_mask
    base_pos, base_neg = np.maximum(adv, 0.0)[:, None], np.maximum(-adv, 0.0)[:, None]

    def margins(mu_pos, mu_neg):  # margin_pos = lam_w * d_neg - d_pos, margin_neg the mirror
        d_pos = ((v - mu_pos) ** 2).sum(-1)
        d_neg = ((v - mu_neg) ** 2).sum(-1)
        return d_neg - d_pos, d_pos - d_neg

    def gamma(margin, valid):  # sqrt(clamp(E[m^2] - E[m]^2, eps)): population std, count >= 1
        count = max(valid.sum(), 1.0)
        mean = (margin * valid).sum() / count
        return math.sqrt(max((margin**2 * valid).sum() / count - mean**2, eps))

    def centroid(w):
        return (w[..., None] * v).sum((0, 1)) / max(w.sum(), eps)

    mu_pos, mu_neg = centroid(base_pos * token_mask), centroid(base_neg * token_mask)
    margin_pos, margin_neg = margins(mu_pos, mu_neg)
    gamma_pos, gamma_neg = gamma(margin_pos, valid_pos_mask), gamma(margin_neg, valid_neg_mask)
    mu_pos_star, mu_neg_star = mu_pos, mu_neg
    for _ in range(iters):  # disc_steps = K
        margin_pos, margin_neg = margins(mu_pos_star, mu_neg_star)
        w_pos = _sigmoid(margin_pos / gamma_pos) * base_pos * valid_pos_mask
        w_neg = _sigmoid(margin_neg / gamma_neg) * base_neg * valid_neg_mask
        mu_pos_star, mu_neg_star = centroid(w_pos), centroid(w_neg)
        # next_m_*: the margins of the centroids *before* this update, so gamma lags one pass.
        gamma_pos, gamma_neg = gamma(margin_pos, valid_pos_mask), gamma(margin_neg, valid_neg_mask)
    margin_pos, margin_neg = margins(mu_pos_star, mu_neg_star)
    w_pos_final = lam_min + (lam_max - lam_min) * _sigmoid(margin_pos / gamma_pos)
    w_neg_final = lam_min + (lam_max - lam_min) * _sigmoid(margin_neg / gamma_neg)
    zero_seq_mask = 1.0 - pos_seq_mask - neg_seq_mask
    weight = (
        w_pos_final * pos_seq_mask + w_neg_final * neg_seq_mask + lam_min * zero_seq_mask
    ) * token_mask
    gy_norm = token_mask.sum() / max(weight.sum(), 1e-8)
    dist = np.linalg.norm(mu_pos_star - mu_neg_star)
    return weight * gy_norm, weight, gamma_pos, gamma_neg, dist


def _released_batch(seed=0, B=6, T=5, D=4):
    """Mixed-sign advantages, one zero-advantage and one all-padding row, ragged lengths."""
    rng = np.random.default_rng(seed)
    v_BxTxD = (1 - rng.uniform(size=(B, T, 1))) * (rng.normal(size=(B, T, D)) + 0.5)
    adv_B = np.array([1.3, -0.6, 0.0, 0.4, -1.7, 0.9])[:B]
    mask_BxT = np.arange(T)[None, :] < np.array([5, 3, 4, 2, 5, 0])[:B, None]
    return v_BxTxD.astype(np.float32), adv_B.astype(np.float32), mask_BxT


@pytest.mark.parametrize("iters", [0, 1, 2])
@pytest.mark.parametrize("seed", [0, 1])
def test_default_matches_authors_released_code(iters, seed):
    # The default DeltaConfig (gamma="released") must reproduce the authors' loop, including its
    # gamma one pass behind the centroids; chunk=2 (an overlapping last chunk) must agree too.
    v_BxTxD, adv_B, mask_BxT = _released_batch(seed)
    cfg = delta.DeltaConfig(iters=iters)
    assert cfg.gamma == "released"
    ref_omega, ref_raw, ref_gp, ref_gn, ref_dist = _reference_released(
        v_BxTxD, adv_B, mask_BxT, cfg.lam_min, cfg.lam_max, iters
    )
    knobs = dict(lam_min=cfg.lam_min, lam_max=cfg.lam_max, iters=cfg.iters, gamma=cfg.gamma)
    for chunk in (0, 2):
        omega_BxT, stats = coefficients(v_BxTxD, adv_B, mask_BxT, chunk=chunk, **knobs)
        np.testing.assert_allclose(omega_BxT, ref_omega, rtol=0, atol=1e-5)
        np.testing.assert_allclose(stats["omega_raw"], ref_raw, rtol=0, atol=1e-5)
        assert stats["delta/gamma_pos"] == pytest.approx(ref_gp, rel=1e-5)
        assert stats["delta/gamma_neg"] == pytest.approx(ref_gn, rel=1e-5)
        assert stats["delta/centroid_dist"] == pytest.approx(ref_dist, rel=1e-5)
    # The keyword's own default is the released schedule as well.
    omega_kw_BxT, _ = coefficients(v_BxTxD, adv_B, mask_BxT, iters=iters)
    np.testing.assert_allclose(omega_kw_BxT, ref_omega, rtol=0, atol=1e-5)


@pytest.mark.parametrize("iters", [1, 2])
def test_current_gamma_keeps_the_previous_behaviour(iters):
    # gamma="current" is the schedule this module had before "released" became the default: every
    # gamma from the newest centroids. At K >= 1 the two schedules really differ.
    v_BxTxD, adv_B, mask_BxT = _released_batch(0)
    ref_omega, ref_raw, ref_dist = _reference(v_BxTxD, adv_B, mask_BxT, iters=iters)
    for chunk in (0, 2):
        omega_BxT, stats = coefficients(
            v_BxTxD, adv_B, mask_BxT, iters=iters, chunk=chunk, gamma="current"
        )
        np.testing.assert_allclose(omega_BxT, ref_omega, rtol=0, atol=1e-5)
        np.testing.assert_allclose(stats["omega_raw"], ref_raw, rtol=0, atol=1e-5)
        assert stats["delta/centroid_dist"] == pytest.approx(ref_dist, rel=1e-5)
    released = _reference_released(v_BxTxD, adv_B, mask_BxT, iters=iters)[0]
    assert np.abs(released - ref_omega).max() > 1e-3


def test_gamma_schedules_agree_without_refinement():
    v_BxTxD, adv_B, mask_BxT = _released_batch(1)
    omega_r_BxT, _ = coefficients(v_BxTxD, adv_B, mask_BxT, iters=0, gamma="released")
    omega_c_BxT, _ = coefficients(v_BxTxD, adv_B, mask_BxT, iters=0, gamma="current")
    np.testing.assert_array_equal(omega_r_BxT, omega_c_BxT)


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
    kw = dict(iters=2, gamma="current")  # the numpy reference below is the "current" schedule
    omega_BxT, stats = coefficients(v_BxTxD, adv_B, mask_BxT, chunk=0, **kw)
    omega_c_BxT, stats_c = coefficients(v_BxTxD, adv_B, mask_BxT, chunk=chunk, **kw)
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
        (dict(gamma="lagged"), "gamma"),
        (dict(gamma=None), "gamma"),
    ):
        with pytest.raises(ValueError, match=f"DeltaConfig.{field}="):
            delta.DeltaConfig(**bad)
    with pytest.raises(ValueError, match="chunk"):
        delta.coefficients(jnp.zeros((1, 2, 3)), jnp.zeros(1), jnp.ones((1, 2)), chunk=-1)
    with pytest.raises(ValueError, match="gamma"):
        delta.coefficients(jnp.zeros((1, 2, 3)), jnp.zeros(1), jnp.ones((1, 2)), gamma="new")
