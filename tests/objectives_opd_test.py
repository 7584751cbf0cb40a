"""OPD: per-token reverse-KL advantages by hand, zero at teacher == student, the hybrid mix, every
horizon schedule on a small table, and config validation."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlvr_jax.objectives import opd

LOGPS_2x3 = jnp.array([[-1.0, -2.0, -0.5], [-0.1, -3.0, -jnp.inf]])
TEACHER_2x3 = jnp.array([[-0.5, -2.5, -0.5], [-1.1, -1.0, -4.0]])
MASK_2x3 = jnp.array([[1, 1, 1], [1, 1, 0]])


def test_opd_advantage_is_teacher_minus_student():
    adv_BxTc = opd.opd_advantages(LOGPS_2x3, TEACHER_2x3, MASK_2x3)
    assert adv_BxTc.dtype == jnp.float32
    # -(log pi - log pi_T) per token; the padded slot (student -inf there) is exactly 0.
    np.testing.assert_allclose(adv_BxTc, [[0.5, -0.5, 0.0], [-1.0, 2.0, 0.0]], rtol=1e-6)


def test_teacher_equal_to_student_gives_exactly_zero():
    logps_BxTc = -jax.random.uniform(jax.random.key(0), (4, 7), minval=0.0, maxval=5.0)
    mask_BxTc = jnp.arange(7)[None, :] < jnp.array([7, 3, 0, 5])[:, None]
    adv_BxTc = opd.opd_advantages(logps_BxTc, logps_BxTc, mask_BxTc)
    np.testing.assert_array_equal(adv_BxTc, 0.0)
    # bf16 student log-probs are promoted to float32 before the difference.
    adv16_BxTc = opd.opd_advantages(logps_BxTc.astype(jnp.bfloat16), logps_BxTc, mask_BxTc)
    assert adv16_BxTc.dtype == jnp.float32


def test_mix_broadcasts_the_sequence_advantage():
    opd_adv_BxTc = opd.opd_advantages(LOGPS_2x3, TEACHER_2x3, MASK_2x3)
    mixed_BxTc = opd.mix_advantages(jnp.array([1.0, -2.0]), opd_adv_BxTc, MASK_2x3, 0.5)
    expected = [[1.25, 0.75, 1.0], [-2.5, -1.0, 0.0]]
    np.testing.assert_allclose(mixed_BxTc, expected, rtol=1e-6)
    # lambda = 0 is GRPO alone, on valid tokens only.
    grpo_only = opd.mix_advantages(jnp.array([1.0, -2.0]), opd_adv_BxTc, MASK_2x3, 0.0)
    np.testing.assert_array_equal(grpo_only, [[1.0, 1.0, 1.0], [-2.0, -2.0, 0.0]])


def test_compute_dispatches_pure_and_hybrid():
    pure = opd.compute(opd.OPDConfig(enabled=True), LOGPS_2x3, TEACHER_2x3, MASK_2x3)
    np.testing.assert_array_equal(pure, opd.opd_advantages(LOGPS_2x3, TEACHER_2x3, MASK_2x3))
    cfg = opd.OPDConfig(enabled=True, mix_grpo=True, lambda_opd=0.5)
    with pytest.raises(ValueError, match="grpo_adv_B"):
        opd.compute(cfg, LOGPS_2x3, TEACHER_2x3, MASK_2x3)
    grpo_adv_B = jnp.array([1.0, -2.0])
    hybrid = jax.jit(opd.compute, static_argnums=0)(
        cfg, LOGPS_2x3, TEACHER_2x3, MASK_2x3, grpo_adv_B
    )
    np.testing.assert_allclose(hybrid, [[1.25, 0.75, 1.0], [-2.5, -1.0, 0.0]], rtol=1e-6)


# (config overrides, step, L, expected horizon)
HORIZON_TABLE = [
    ({"horizon": "full"}, 0, 512, 512),
    ({"horizon": "full"}, 999, 7, 7),
    ({"horizon": "truncated"}, 0, 512, 52),  # ceil(51.2)
    ({"horizon": "truncated"}, 500, 30, 3),  # 0.1 * 30 is 3 exactly, not float 3.0000000000000004
    ({"horizon": "truncated"}, 0, 5, 1),  # ceil(0.5)
    ({"horizon": "truncated", "rho": 0.25}, 3, 10, 3),  # ceil(2.5)
    ({"horizon": "truncated", "rho": 1.0}, 0, 10, 10),
    ({"horizon": "linear", "ramp_steps": 10}, 0, 100, 10),  # H0 = ceil(0.1 * 100)
    ({"horizon": "linear", "ramp_steps": 10}, 5, 100, 55),  # 10 + 90 * 5/10
    ({"horizon": "linear", "ramp_steps": 10}, 10, 100, 100),
    ({"horizon": "linear", "ramp_steps": 10}, 50, 100, 100),  # clamped at L
    ({"horizon": "linear", "ramp_steps": 3}, 1, 100, 40),  # 10 + 90/3
    ({"horizon": "linear", "ramp_steps": 7}, 1, 100, 23),  # ceil(10 + 90/7 = 22.86)
    ({"horizon": "linear", "ramp_steps": 4, "h0_frac": 0.01}, 0, 10, 1),  # H0 >= 1
    ({"horizon": "staged"}, 0, 200, 20),
    ({"horizon": "staged"}, 24, 200, 20),
    ({"horizon": "staged"}, 25, 200, 50),
    ({"horizon": "staged"}, 60, 200, 100),
    ({"horizon": "staged"}, 75, 200, 200),
    ({"horizon": "staged"}, 10_000, 200, 200),
    ({"horizon": "staged", "stages": ((0, 0.3), (2, 1.0))}, 1, 9, 3),  # ceil(2.7)
    ({"horizon": "staged", "stages": [[0, 0.5], [4, 1]]}, 4, 9, 9),  # lists become tuples
]


@pytest.mark.parametrize(("overrides", "step", "full_len", "expected"), HORIZON_TABLE)
def test_horizon_schedule(overrides, step, full_len, expected):
    cfg = opd.OPDConfig(enabled=True, **overrides)
    horizon = opd.horizon_tokens(cfg, step, full_len)
    assert type(horizon) is int and horizon == expected


@pytest.mark.parametrize("horizon", opd.HORIZONS)
def test_horizon_is_monotone_and_within_bounds(horizon):
    cfg = opd.OPDConfig(horizon=horizon, ramp_steps=20)
    for full_len in (1, 2, 17, 1024):
        hs = [opd.horizon_tokens(cfg, k, full_len) for k in range(0, 120, 3)]
        assert all(1 <= h <= full_len for h in hs)
        assert hs == sorted(hs)
        if horizon != "truncated":
            assert hs[-1] == full_len


def test_horizon_rejects_bad_arguments():
    cfg = opd.OPDConfig()
    with pytest.raises(ValueError, match="full_len"):
        opd.horizon_tokens(cfg, 0, 0)
    with pytest.raises(ValueError, match="step"):
        opd.horizon_tokens(cfg, -1, 10)


def test_config_is_hashable_with_normalised_stages():
    cfg = opd.OPDConfig(stages=[[0, 0.2], [10, 1.0]])
    assert cfg.stages == ((0, 0.2), (10, 1.0))
    assert hash(cfg) == hash(opd.OPDConfig(stages=((0, 0.2), (10, 1.0))))
    assert dataclasses.replace(cfg, horizon="staged").stages == cfg.stages


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("enabled", 1),
        ("mix_grpo", "yes"),
        ("lambda_opd", -0.1),
        ("lambda_opd", float("nan")),
        ("horizon", "progressive"),
        ("rho", 0.0),
        ("rho", 1.5),
        ("h0_frac", 0.0),
        ("ramp_steps", 0),
        ("ramp_steps", 2.0),
        ("stages", ()),
        ("stages", ((1, 0.1), (5, 1.0))),  # must start at step 0
        ("stages", ((0, 0.5), (5, 0.25))),  # fractions must not shrink
        ("stages", ((0, 0.1), (0, 0.5))),  # starts must increase
        ("stages", ((0, 0.1), (5, 1.5))),
        ("stages", ((0, 0.1, 3),)),
        ("stages", 3),
    ],
)
def test_config_validation_names_the_field(field, value):
    with pytest.raises(ValueError, match=rf"OPDConfig\.{field}="):
        opd.OPDConfig(**{field: value})
