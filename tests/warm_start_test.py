"""Warm-start batching: length groups and the padded batches built from them."""

import numpy as np
import pytest

from rlvr_jax.rollout import multi_turn
from rlvr_jax.train import warm_start

BUCKETS = multi_turn.BUCKETS  # 64, 128, 192, 256, 384, 512, ...


def _rows(lengths):
    return [warm_start.SFTRow([1] * p, [2] * c) for p, c in lengths]


def test_length_groups_pad_each_row_to_its_own_bucket_pair():
    # 20 short rows (64, 64), 20 long rows (128, 384): two groups, no padding to the longest.
    rows = _rows([(50, 60)] * 20 + [(100, 300)] * 20)
    groups = warm_start.length_groups(rows, BUCKETS, batch_size=8)
    assert groups == [((64, 64), list(range(20))), ((128, 384), list(range(20, 40)))]


def test_small_groups_join_the_next_larger_one_and_the_tail_joins_the_last():
    # 3 rows at (64, 64) are too few for a batch of 4: they join the (64, 128) rows, padded to the
    # elementwise max; the 2 longest rows (192, 512) join the last full group.
    rows = _rows([(10, 10)] * 3 + [(60, 100)] * 5 + [(100, 200)] * 6 + [(150, 500)] * 2)
    groups = warm_start.length_groups(rows, BUCKETS, batch_size=4)
    shapes = [s for s, _ in groups]
    assert shapes == [(64, 128), (192, 512)]
    assert sorted(i for _, idx in groups for i in idx) == list(range(16))
    assert groups[0][1] == list(range(8))
    for (Tp, Tc), idx in groups:
        assert len(idx) >= 4
        assert all(len(rows[i].prompt) <= Tp and len(rows[i].completion) <= Tc for i in idx)


def test_too_few_rows_for_any_batch_is_one_group():
    rows = _rows([(10, 10), (100, 300)])
    assert warm_start.length_groups(rows, BUCKETS, batch_size=8) == [((128, 384), [0, 1])]


def test_grouped_padding_is_at_most_the_single_shape():
    rng = np.random.default_rng(0)
    rows = _rows(zip(rng.integers(20, 150, 300), rng.integers(20, 480, 300), strict=True))
    single = sum(warm_start.sft_shape(rows, BUCKETS))
    groups = warm_start.length_groups(rows, BUCKETS, batch_size=16)
    per_row = sum(len(idx) * (Tp + Tc) for (Tp, Tc), idx in groups) / len(rows)
    assert per_row < single
    # Every row fits its group's shape in a batch built from it.
    (Tp, Tc), idx = groups[0]
    batch = warm_start.sft_batch([rows[i] for i in idx[:16]], 0, (Tp, Tc))
    assert batch.prompt_BxTp.shape == (16, Tp) and batch.completion_BxTc.shape == (16, Tc)
    np.testing.assert_array_equal(
        batch.completion_mask_BxTc.sum(1), [len(rows[i].completion) for i in idx[:16]]
    )


@pytest.mark.parametrize("group", [False, True])
def test_every_row_is_drawn_about_equally_often(group):
    """Groups are drawn in proportion to their size: grouping changes padding, not the data mix."""
    rows = _rows([(10, 10)] * 40 + [(100, 300)] * 10)
    groups = (
        warm_start.length_groups(rows, BUCKETS, 4)
        if group
        else [(warm_start.sft_shape(rows, BUCKETS), list(range(len(rows))))]
    )
    rng = np.random.default_rng(1)
    counts = np.zeros(len(rows))
    for _ in range(4000):
        shape, idx = warm_start.draw(groups, 4, rng)
        assert len(set(idx)) == 4 and any(shape == s and set(idx) <= set(g) for s, g in groups)
        counts[idx] += 1
    assert counts.mean() == pytest.approx(4000 * 4 / 50)
    assert counts.std() / counts.mean() < 0.1
