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
