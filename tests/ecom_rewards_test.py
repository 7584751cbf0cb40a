"""Ecom-RLVE reward formulas against hand-computed values."""

import pytest

from rlvr_jax.envs.ecom import rewards


def test_compose():
    assert rewards.compose(1.0, 1.0, 0.0) == pytest.approx(0.9)  # the best an episode can get
    assert rewards.compose(1.0, -1.0, -1.0) == pytest.approx(0.75 - 0.15 - 0.10)
    assert rewards.compose(-1.0, -1.0, -1.0) == pytest.approx(-1.0)
    assert rewards.compose(0.2, 0.5, -0.5) == pytest.approx(0.15 + 0.075 - 0.05)
    assert rewards.HARD_FAIL_REWARD == -1.0


@pytest.mark.parametrize(
    "t_eff, t_max, expected", [(1, 4, 1.0), (4, 4, -1.0), (2, 5, 0.5), (3, 5, 0.0), (0, 4, 1.0)]
)
def test_efficiency(t_eff, t_max, expected):
    assert rewards.efficiency(t_eff, t_max) == pytest.approx(expected)


def test_hallucination():
    assert rewards.hallucination(["P0001", "P0002"], {"P0001"}) == pytest.approx(-0.5)
    assert rewards.hallucination(["P0001"], {"P0001", "P0009"}) == 0.0
    assert rewards.hallucination([], set()) == 0.0
    assert rewards.hallucination(["P1", "P2", "P3", "P4"], {"P4"}) == pytest.approx(-0.75)


def test_ndcg():
    assert rewards.ndcg([3, 2], [3, 2]) == pytest.approx(1.0)
    # DCG = 2 + 3/log2(3) = 3.892789; ideal = 3 + 2/log2(3) = 4.261860.
    assert rewards.ndcg([2, 3], [3, 2]) == pytest.approx(3.892789 / 4.261860, abs=1e-6)
    assert rewards.ndcg([0, 0], [1, 1]) == 0.0
    assert rewards.ndcg([1], []) == 0.0


def test_pd_task():
    assert rewards.pd_alpha(0) == 4 and rewards.pd_alpha(4) == 5 and rewards.pd_alpha(9) == 6
    assert rewards.pd_task(1.0, 1.0, 0.0, 0) == pytest.approx(1.0)
    # 0.55 (2*0.913403-1) + 0.35 (2*0.5^5-1) + 0.10 (1-2*0.5) = 0.454743 - 0.328125 + 0
    nd = 3.892789 / 4.261860
    assert rewards.pd_task(nd, 0.5, 0.5, 4) == pytest.approx(0.126618, abs=1e-5)
    assert rewards.pd_task(0.0, 0.0, 1.0, 0) == pytest.approx(-1.0)


def test_sub_task():
    assert rewards.sub_task(1.0, 0.0) == pytest.approx(1.0)
    assert rewards.sub_task(0.75, 0.25) == pytest.approx(0.8 * 0.5 + 0.2 * 0.5)
    assert rewards.sub_task(0.0, 1.0) == pytest.approx(-1.0)


def test_cart():
    assert rewards.unit_f1({"a": 2, "b": 1}, {"a": 2, "b": 1}) == 1.0
    f1 = rewards.unit_f1({"a": 2, "b": 1}, {"a": 1, "c": 1})  # hit 1, 3 + 2 units: 2/5
    assert f1 == pytest.approx(0.4)
    assert rewards.cart_task(f1) == pytest.approx(-0.2)
    assert rewards.unit_f1({"a": 1}, {}) == 0.0
    assert rewards.cart_task(1.0) == 1.0


def test_return_task():
    assert rewards.return_task(1, 1, 1) == pytest.approx(1.0)
    assert rewards.return_task(1, 1, -1) == pytest.approx(0.8)
    assert rewards.return_task(1, -1, 1) == pytest.approx(0.1)
    assert rewards.return_task(-1, -1, -1) == pytest.approx(-1.0)


def test_status_task():
    assert rewards.status_task(True, True) == 1.0
    assert rewards.status_task(True, False) == 0.0
    assert rewards.status_task(False, True) == 0.0
    assert rewards.status_task(False, False) == -1.0


def test_policy():
    assert rewards.policy_numeric(45, 45) == 1.0
    assert rewards.policy_numeric(30, 45) == pytest.approx(2 * (2 / 3) ** 4 - 1)  # -0.604938
    assert rewards.policy_numeric(45, 30) == pytest.approx(2 * (2 / 3) ** 4 - 1)
    assert rewards.policy_numeric(0, 0) == 1.0
    assert rewards.policy_numeric(5, 0) == -1.0
    assert rewards.policy_numeric(-5, 5) == -1.0
    assert rewards.policy_categorical("Store  Credit", "store credit") == 1.0
    assert rewards.policy_categorical("card", "store credit") == -1.0
    assert rewards.is_correct_threshold(0.95) and not rewards.is_correct_threshold(0.94)
