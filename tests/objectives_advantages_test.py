"""Advantages and RLConfig: hand-computed values on a 2x3 reward table, zero-variance groups,
dispatch, and config validation."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlvr_jax.objectives import advantages, rl_config

# Two prompts, G = 3: group 0 = (1, 0, 0), group 1 = (0, 0.5, 1).
REWARDS_2x3 = jnp.array([1.0, 0.0, 0.0, 0.0, 0.5, 1.0])
S2 = math.sqrt(2.0)
S32 = math.sqrt(1.5)


def test_grpo_by_hand():
    # Group 0: mean 1/3, population std sqrt(2/9) = sqrt(2)/3 -> (2/3)/(sqrt2/3) = sqrt2, ...
    # Group 1: mean 1/2, population std sqrt(1/6)            -> 0.5*sqrt6 = sqrt(3/2), 0, ...
    expected = [S2, -S2 / 2, -S2 / 2, -S32, 0.0, S32]
    np.testing.assert_allclose(advantages.grpo(REWARDS_2x3, 3, 0.0, ddof=0), expected, rtol=1e-6)
    np.testing.assert_allclose(advantages.grpo(REWARDS_2x3, 3, ddof=0), expected, rtol=1e-5)
    # eps is added to std: at eps = 1 the group-0 top advantage is (2/3) / (sqrt2/3 + 1).
    eps1 = advantages.grpo(REWARDS_2x3, 3, 1.0, ddof=0)
    np.testing.assert_allclose(eps1[0], (2 / 3) / (S2 / 3 + 1), rtol=1e-6)


def test_grpo_default_is_the_unbiased_std_of_verl_and_trl():
    # verl and TRL divide by torch.std (ddof=1) + eps: group 0 = (1, 0, 0) has mean 1/3 and
    # std sqrt(((2/3)^2 + 2 (1/3)^2) / 2) = sqrt(1/3), so A = (2/3) sqrt(3) = 2/sqrt(3), ...
    r = np.asarray(REWARDS_2x3, np.float64).reshape(2, 3)
    expected = ((r - r.mean(1, keepdims=True)) / (r.std(1, ddof=1, keepdims=True) + 1e-6)).ravel()
    np.testing.assert_allclose(expected[0], 2 / math.sqrt(3), rtol=1e-5)
    np.testing.assert_allclose(advantages.grpo(REWARDS_2x3, 3), expected, rtol=1e-6)
    rl = rl_config.RLConfig(group_size=3)
    assert rl.adv_std_ddof == 1
    np.testing.assert_allclose(advantages.compute(REWARDS_2x3, rl), expected, rtol=1e-6)
    # The population std scales every advantage by sqrt(G / (G - 1)) (1.15 at G = 4).
    np.testing.assert_allclose(
        advantages.grpo(REWARDS_2x3, 3, 0.0, ddof=0) / advantages.grpo(REWARDS_2x3, 3, 0.0),
        np.where(expected != 0, math.sqrt(1.5), np.nan),
        rtol=1e-5,
    )
    with pytest.raises(ValueError, match="RLConfig.adv_std_ddof=2"):
        rl_config.RLConfig(adv_std_ddof=2)


def test_dr_grpo_by_hand():
    expected = [2 / 3, -1 / 3, -1 / 3, -0.5, 0.0, 0.5]
    np.testing.assert_allclose(advantages.dr_grpo(REWARDS_2x3, 3), expected, rtol=1e-6)


def test_rloo_by_hand():
    # r_i minus the mean of the two others: 1 - 0, 0 - 1/2, ...; 0 - 3/4, 1/2 - 1/2, 1 - 1/4.
    expected = [1.0, -0.5, -0.5, -0.75, 0.0, 0.75]
    np.testing.assert_allclose(advantages.rloo(REWARDS_2x3, 3), expected, rtol=1e-6)


@pytest.mark.parametrize("estimator", rl_config.ADV_ESTIMATORS)
def test_zero_variance_groups_get_exactly_zero(estimator):
    # 0.1 is not exact in binary, so a float mean misses it by an ulp: the result must still be 0.
    rewards_B = jnp.array([0.1, 0.1, 0.1, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 7.3, 7.3, 7.3])
    adv_B = advantages.compute(rewards_B, rl_config.RLConfig(group_size=3, adv_estimator=estimator))
    assert adv_B.dtype == jnp.float32 and adv_B.shape == (12,)
    np.testing.assert_array_equal(adv_B[:3], 0.0)
    np.testing.assert_array_equal(adv_B[6:], 0.0)
    assert np.all(adv_B[3:6] != 0.0)


@pytest.mark.parametrize("estimator", rl_config.ADV_ESTIMATORS)
def test_groups_are_independent_and_sum_to_zero(estimator):
    rl = rl_config.RLConfig(group_size=4, adv_estimator=estimator)
    rewards_B = jax.random.uniform(jax.random.key(0), (12,))
    adv_PxG = advantages.compute(rewards_B, rl).reshape(3, 4)
    np.testing.assert_allclose(adv_PxG.sum(axis=1), 0.0, atol=1e-5)
    # Changing prompt 2's rewards leaves prompts 0 and 1 alone.
    other_PxG = advantages.compute(rewards_B.at[8:].set(0.5), rl).reshape(3, 4)
    np.testing.assert_array_equal(adv_PxG[:2], other_PxG[:2])


def test_compute_dispatches_and_jits():
    for estimator, fn in (("grpo", advantages.grpo), ("dr_grpo", advantages.dr_grpo)):
        rl = rl_config.RLConfig(group_size=3, adv_estimator=estimator)
        np.testing.assert_array_equal(advantages.compute(REWARDS_2x3, rl), fn(REWARDS_2x3, 3))
    rl = rl_config.RLConfig(group_size=3, adv_estimator="rloo")
    jitted = jax.jit(advantages.compute, static_argnames="rl")
    np.testing.assert_allclose(jitted(REWARDS_2x3, rl=rl), advantages.rloo(REWARDS_2x3, 3))


def test_batch_not_a_multiple_of_group_raises():
    with pytest.raises(ValueError, match="multiple of G=4"):
        advantages.grpo(REWARDS_2x3, 4)
    with pytest.raises(ValueError, match="G >= 2"):
        advantages.rloo(REWARDS_2x3, 1)


def test_rl_config_is_hashable_and_reports_reference():
    rl = rl_config.RLConfig()
    assert hash(rl) == hash(rl_config.RLConfig()) and not rl.needs_reference
    assert rl_config.RLConfig(beta=0.04).needs_reference
    dapo = rl_config.RLConfig(
        eps_high=0.28,
        dynamic_sampling=True,
        overlong_penalty=True,
        overlong_max_len=20480,
        overlong_cache_len=4096,
    )
    assert dataclasses.replace(dapo, eps_high=0.2) != dapo


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(loss_agg="x"), "RLConfig.loss_agg='x' is not one of"),
        (dict(adv_estimator="ppo"), "RLConfig.adv_estimator"),
        (dict(kl_estimator="k4"), "RLConfig.kl_estimator"),
        (dict(group_size=0), "RLConfig.group_size"),
        (dict(group_size=1, adv_estimator="rloo"), "RLConfig.group_size"),
        (dict(eps_low=1.0), "RLConfig.eps_low"),
        (dict(eps_high=-0.1), "RLConfig.eps_high"),
        (dict(dual_clip=1.0), "RLConfig.dual_clip"),
        (dict(beta=-1.0), "RLConfig.beta"),
        (dict(loss_agg="seq_mean_token_sum_norm"), "RLConfig.norm_len"),
        (dict(loss_agg="seq_mean_token_sum_norm", norm_len=0), "RLConfig.norm_len"),
        (dict(num_updates=0), "RLConfig.num_updates"),
        (dict(max_resample_rounds=-1), "RLConfig.max_resample_rounds"),
        (dict(dynamic_sampling=1), "RLConfig.dynamic_sampling"),
        (dict(overlong_penalty=True), "RLConfig.overlong_penalty"),
        (
            dict(overlong_penalty=True, overlong_max_len=10, overlong_cache_len=20),
            "RLConfig.overlong_cache_len",
        ),
    ],
)
def test_rl_config_validation_names_the_field(kwargs, field):
    with pytest.raises(ValueError) as err:
        rl_config.RLConfig(**kwargs)
    assert str(err.value).startswith(field)
