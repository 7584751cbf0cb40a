"""DAPO host-side helpers: dynamic-sampling group filter, overlong filter and soft penalty."""

import numpy as np
import pytest

from rlvr_jax.objectives import dapo


def test_keep_groups_drops_exactly_the_all_equal_groups():
    rewards_B = np.array(
        [1, 1, 1, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0.1, 0.1, 0.1, 0.1, 0.5, 0.5, 0.5, 0.6], np.float32
    )
    np.testing.assert_array_equal(dapo.keep_groups(rewards_B, 4), [False, False, True, False, True])
    assert dapo.keep_groups(rewards_B, 4).dtype == bool
    # G = 1: every group is trivially constant.
    np.testing.assert_array_equal(dapo.keep_groups(rewards_B[:3], 1), [False] * 3)
    with pytest.raises(ValueError, match="groups of 3"):
        dapo.keep_groups(rewards_B, 3)


def test_soft_overlong_penalty_at_the_boundaries():
    # L_max = 20, L_cache = 4: free up to 16, linear from 0 to -1 over (16, 20], -1 beyond.
    lengths_B = np.array([0, 15, 16, 17, 18, 19, 20, 21, 100])
    expected = [0.0, 0.0, 0.0, -0.25, -0.5, -0.75, -1.0, -1.0, -1.0]
    penalty_B = dapo.soft_overlong_penalty(lengths_B, max_len=20, cache_len=4)
    assert penalty_B.dtype == np.float32
    np.testing.assert_allclose(penalty_B, expected, rtol=1e-7)
    # DAPO's setting: L_max = 20480, L_cache = 4096.
    dapo_B = dapo.soft_overlong_penalty(np.array([16384, 16385, 18432, 20480, 20481]), 20480, 4096)
    np.testing.assert_allclose(dapo_B, [0.0, -1 / 4096, -0.5, -1.0, -1.0], rtol=1e-6)
    # cache = max: the penalty starts at length 0.
    np.testing.assert_allclose(
        dapo.soft_overlong_penalty(np.array([0, 5, 10]), 10, 10), [0, -0.5, -1]
    )
    for bad in ((10, 0), (10, 11)):
        with pytest.raises(ValueError, match="cache_len"):
            dapo.soft_overlong_penalty(lengths_B, *bad)


def test_overlong_mask_drops_truncated():
    truncated_B = np.array([True, False, False, True])
    np.testing.assert_array_equal(dapo.overlong_mask(truncated_B), [False, True, True, False])
    np.testing.assert_array_equal(dapo.overlong_mask([0, 1]), [True, False])


def test_overlong_filter_removes_truncated_rows_from_the_loss_like_trl():
    """TRL's mask_truncated_completions: completion_mask *= ~truncated before the loss, so a
    truncated row leaves the token-mean denominator and keeps no KL or entropy term. Our loop
    applies dapo.filter_overlong to the TrainBatch; the loss below is TRL's, written out."""
    import jax.numpy as jnp

    from rlvr_jax.objectives import batch as batch_lib
    from rlvr_jax.objectives import policy_loss, rl_config

    mask = np.array([[1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 0, 0]], bool)
    logps = np.array([[-1.0, -2.0, -0.5, 0.0], [-0.3, -0.2, -1.5, -0.9], [-2.0, -0.1, 0, 0]])
    ref = logps + np.array([[0.2, -0.1, 0.3, 0.0], [0.5, 0.4, -0.6, 0.7], [-0.2, 0.1, 0, 0]])
    entropy = np.array([[1.0, 2.0, 3.0, 0.0], [4.0, 5.0, 6.0, 7.0], [0.5, 1.5, 0, 0]])
    adv = np.where(mask, np.array([1.0, -0.5, 2.0])[:, None], 0.0)
    truncated = np.array([False, True, False])  # row 1 hit the length limit
    batch = batch_lib.TrainBatch(
        prompt_BxTp=np.ones((3, 2), np.int32),
        prompt_mask_BxTp=np.ones((3, 2), bool),
        completion_BxTc=np.ones((3, 4), np.int32),
        completion_mask_BxTc=mask,
        old_logps_BxTc=logps.astype(np.float32),
        adv_BxTc=adv.astype(np.float32),
    )
    kept = dapo.filter_overlong(batch, truncated)
    beta, ent = 0.1, 0.01
    rl = rl_config.RLConfig(group_size=3, beta=beta, entropy_coef=ent)
    loss, _ = policy_loss.policy_loss(
        jnp.asarray(logps, jnp.float32),
        kept.old_logps_BxTc,
        kept.adv_BxTc,
        kept.completion_mask_BxTc,
        rl=rl,
        ref_logps_BxT=jnp.asarray(ref, jnp.float32),
        entropy_BxT=jnp.asarray(entropy, jnp.float32),
    )
    # TRL: on policy (ratio 1), per-token -A + beta * k3 - ent * H, token mean over kept rows.
    m = mask & ~truncated[:, None]
    k3 = np.exp(ref - logps) - (ref - logps) - 1
    per_token = -adv + beta * k3 - ent * entropy
    expected = np.sum(per_token * m) / m.sum()  # 5 tokens, not 9
    np.testing.assert_allclose(float(loss), expected, rtol=1e-6)
    assert not np.asarray(kept.completion_mask_BxTc)[1].any()
    # Zeroing only the advantage (the old behaviour) would keep row 1's KL and entropy.
    stale = np.sum((-np.where(truncated[:, None], 0, adv) + beta * k3 - ent * entropy) * mask)
    assert abs(stale / mask.sum() - expected) > 0.05
