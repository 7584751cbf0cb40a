"""Ecom-RLVE difficulty: theta(d) by hand, the RLVE adaptive rule, records, the curriculum."""

import json

import numpy as np
import pytest

from rlvr_jax.envs.ecom import difficulty, envs


@pytest.mark.parametrize(
    "d, expected",
    [
        # m, k_rec, t_max, p_missing, p_noise, p_switch, top_k, eps_rank, p_oos, h_orders,
        # b_branch, b_tool; sigma(-2) = 0.11920292, sigma(-2.5) = 0.07585818, sigma(-1) =
        # 0.26894142, sigma(1.3333) = 0.79139147, sigma(6.6667) = 0.99872871, sigma(4) =
        # 0.98201379, sigma(10) = 0.99995460, sigma(14.667) = 0.99999957.
        (0, (2, 3, 4, 0.8 * 0.11920292, 0.0, 0.6 * 0.07585818, 200, 0.0, 0.0, 1, 1, 1)),
        (3, (3, 4, 5, 0.4, 0.03, 0.6 * 0.26894142, 170, 0.06, 0.15, 2, 2, 2)),
        (5, (4, 4, 6, 0.8 * 0.79139147, 0.05, 0.3, 150, 0.1, 0.25, 3, 2, 3)),
        (13, (8, 7, 10, 0.8 * 0.99872871, 0.125, 0.6 * 0.98201379, 70, 0.26, 0.5, 7, 5, 7)),
        (25, (14, 10, 16, 0.8 * 0.99999957, 0.125, 0.6 * 0.99995460, 20, 0.4, 0.5, 13, 9, 13)),
    ],
)
def test_theta_by_hand(d, expected):
    th = difficulty.theta(d)
    got = (th.m, th.k_rec, th.t_max, th.p_missing, th.p_noise, th.p_switch, th.top_k,
           th.eps_rank, th.p_oos, th.h_orders, th.b_branch, th.b_tool)  # fmt: skip
    assert got == pytest.approx(expected, abs=1e-6)


def test_theta_rejects_negative():
    with pytest.raises(ValueError):
        difficulty.theta(-1)


def _run(state, d, outcomes):
    for ok in outcomes:
        state = difficulty.update(state, d, ok)
    return state


def test_adaptive_rule_hand_sequence():
    s = difficulty.AdaptiveState()
    s = _run(s, 0, [True] * 31)
    assert s == difficulty.AdaptiveState(l=0, h=0, a=31, b=31)
    s = difficulty.update(s, 0, True)  # 32/32 >= 0.9: promote, reset counters
    assert s == difficulty.AdaptiveState(l=0, h=1, a=0, b=0)
    assert difficulty.update(s, 0, True) == s  # below the frontier: no change
    s = _run(s, 1, [True] * 28 + [False] * 4)  # 28/32 = 0.875 < 0.9: no promotion, reset
    assert s == difficulty.AdaptiveState(l=0, h=1, a=0, b=0)
    s = _run(s, 1, [False] * 3 + [True] * 29)  # 29/32 = 0.906: promote
    assert s == difficulty.AdaptiveState(l=0, h=2, a=0, b=0)
    s = difficulty.AdaptiveState(l=0, h=4, a=0, b=0)
    s = _run(s, 4, [True] * 32)  # h = 5, l = max(0, 5 - 4) = 1
    assert s == difficulty.AdaptiveState(l=1, h=5, a=0, b=0)
    s = _run(s, 5, [True] * 32)
    assert s == difficulty.AdaptiveState(l=2, h=6, a=0, b=0)


def test_adaptive_small_tau():
    s = difficulty.AdaptiveState(l=3, h=3)
    s = difficulty.update(s, 3, True, tau_num=2, tau_acc=0.5, d_delta=4)
    assert s == difficulty.AdaptiveState(l=3, h=3, a=1, b=1)
    s = difficulty.update(s, 3, False, tau_num=2, tau_acc=0.5, d_delta=4)
    assert s == difficulty.AdaptiveState(l=3, h=4, a=0, b=0)  # l = max(3, 4 - 4)


def test_sample_in_window():
    rng = np.random.default_rng(0)
    s = difficulty.AdaptiveState(l=2, h=5)
    draws = {difficulty.sample_difficulty(s, rng) for _ in range(200)}
    assert draws == {2, 3, 4, 5}
    assert difficulty.sample_difficulty(difficulty.AdaptiveState(), rng) == 0


def test_record_round_trip():
    states = {"PD": difficulty.AdaptiveState(1, 5, 7, 9), "SUB": difficulty.AdaptiveState()}
    record = json.loads(json.dumps(difficulty.to_record(states)))
    assert difficulty.from_record(record) == states
    # A resumed controller continues exactly as the original would have.
    a = difficulty.update(states["PD"], 5, True)
    b = difficulty.update(difficulty.from_record(record)["PD"], 5, True)
    assert a == b


def test_curriculum():
    assert difficulty.curriculum_envs(0, envs.ENV_NAMES) == ("PD",)
    assert difficulty.curriculum_envs(1, envs.ENV_NAMES) == ("PD", "SUB")
    assert difficulty.curriculum_envs(2, envs.ENV_NAMES) == ("PD", "SUB", "CART", "RETURN")
    all_envs = ("PD", "SUB", "CART", "RETURN", "STATUS", "POLICY")
    assert difficulty.curriculum_envs(3, envs.ENV_NAMES) == all_envs
    assert difficulty.curriculum_envs(9, envs.ENV_NAMES) == all_envs
    assert difficulty.curriculum_envs(3, available=("PD", "BUNDLE")) == ("PD", "BUNDLE")
