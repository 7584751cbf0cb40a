"""DelTA and DistIL inside the jitted train step (the objectives themselves: objectives_*_test)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rlvr_jax.objectives import delta as delta_lib
from rlvr_jax.objectives import distil as distil_lib
from rlvr_jax.objectives import forward as forward_lib
from rlvr_jax.objectives import objective as objective_lib
from rlvr_jax.train import state as state_lib
from rlvr_jax.train import step as step_lib
from tests.train_step_test import CFG, RL, _batch, _copy, params  # noqa: F401  (fixture)

SGD = optax.sgd(1e-2)


def _run(params, batch, num_micro=1, **kw):  # noqa: F811
    step = step_lib.make_train_step(
        model_cfg=CFG, objective=objective_lib.compose(RL, **kw), optimizer=SGD, num_micro=num_micro
    )
    return step(state_lib.init_state(_copy(params), SGD), batch)


def test_delta_with_flat_coefficients_is_plain_grpo(params):  # noqa: F811
    batch = _batch(params, seed=3)
    flat = delta_lib.DeltaConfig(enabled=True, lam_min=1.0, lam_max=1.0)
    (s0, m0), (s1, m1) = _run(params, batch), _run(params, batch, delta=flat)
    np.testing.assert_allclose(m1["train/loss"], m0["train/loss"], rtol=1e-6)
    np.testing.assert_allclose(m1["delta/omega_mean"], 1.0, atol=1e-6)
    for a, b in zip(jax.tree.leaves(s1.params), jax.tree.leaves(s0.params), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-7)


def test_delta_is_the_same_from_the_loss_forward_and_from_the_prepass(params):  # noqa: F811
    """One micro-batch reuses the loss's forward; two run a no-grad pass first: same update."""
    batch = _batch(params, seed=4)
    cfg = delta_lib.DeltaConfig(enabled=True)
    (s1, m1), (s2, m2) = _run(params, batch, delta=cfg), _run(params, batch, delta=cfg, num_micro=2)
    base = _run(params, batch)[1]
    assert abs(float(m1["train/loss"]) - float(base["train/loss"])) > 1e-6  # DelTA changed it
    np.testing.assert_allclose(m2["train/loss"], m1["train/loss"], rtol=1e-5, atol=1e-7)
    assert 0.0 <= float(m1["delta/shared_weight_share"]) <= 1.0
    for k in ("delta/omega_std", "delta/omega_min", "delta/omega_max", "delta/shared_weight_share"):
        np.testing.assert_allclose(m2[k], m1[k], rtol=1e-4)
    for a, b in zip(jax.tree.leaves(s2.params), jax.tree.leaves(s1.params), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_delta_once_before_several_updates_uses_the_whole_batch(params):  # noqa: F811
    """rl.num_updates > 1: the authors compute the coefficients once, over the whole rollout
    batch, with the pre-update policy. make_delta_fn does; per mini-batch (the old behaviour)
    gives other coefficients."""
    batch = _batch(params, seed=5)
    cfg = delta_lib.DeltaConfig(enabled=True)
    out, stats = delta_lib.make_delta_fn(model_cfg=CFG, delta=cfg, num_micro=2)(params, batch)
    # Reference: v = (1 - p) h from one plain forward of the whole batch, then the coefficients.
    rows = (batch.prompt_BxTp, batch.prompt_mask_BxTp, batch.completion_BxTc)
    fwd = forward_lib.completion_forward(params, *rows, batch.completion_mask_BxTc, model_cfg=CFG)
    v = (1.0 - np.exp(np.asarray(fwd.logps_BxTc)))[..., None] * np.asarray(fwd.hidden_BxTcxD)
    mask = batch.completion_mask_BxTc
    adv_B = np.asarray(batch.adv_BxTc)[:, 0]
    omega, _ = delta_lib.coefficients(jnp.asarray(v), jnp.asarray(adv_B), mask, gamma=cfg.gamma)
    np.testing.assert_allclose(out.adv_BxTc, batch.adv_BxTc * np.asarray(omega), atol=1e-5)
    np.testing.assert_allclose(stats["delta/omega_mean"], 1.0, atol=1e-5)
    # Each half on its own (what two mini-batches computed before) normalises differently.
    half = jax.tree.map(lambda x: x[::2], batch)
    out_half, _ = delta_lib.make_delta_fn(model_cfg=CFG, delta=cfg)(params, half)
    assert np.max(np.abs(np.asarray(out_half.adv_BxTc) - np.asarray(out.adv_BxTc)[::2])) > 1e-3


def test_distil_loss_in_the_step_is_the_forward_ce(params):  # noqa: F811
    batch = _batch(params, seed=5)
    B, Tc = batch.completion_BxTc.shape
    K = 3
    rng = np.random.default_rng(0)
    ids = rng.integers(0, CFG.vocab_size, (B, Tc, K)).astype(np.int32)
    probs = rng.random((B, Tc, K)).astype(np.float32)
    probs /= probs.sum(-1, keepdims=True)
    batch = dataclasses.replace(batch, teacher_ids_BxTcxK=ids, teacher_probs_BxTcxK=probs)
    cfg = distil_lib.DistilConfig(enabled=True, top_k=K)
    _, m = _run(params, batch, distil=cfg)
    # By hand: the student's log-probs of the teacher's top-k tokens, from a plain forward pass.
    fwd = forward_lib.completion_forward(
        params,
        batch.prompt_BxTp,
        batch.prompt_mask_BxTp,
        batch.completion_BxTc,
        batch.completion_mask_BxTc,
        model_cfg=CFG,
    )
    logp = np.asarray(jax.nn.log_softmax(fwd.logits_BxTcxV, axis=-1))
    ce = -(probs * np.take_along_axis(logp, ids, axis=-1)).sum(-1)
    mask = batch.completion_mask_BxTc
    want = (ce * mask).sum() / mask.sum()
    np.testing.assert_allclose(m["train/loss"], want, rtol=1e-5)
    np.testing.assert_allclose(m["distil/ce"], want, rtol=1e-5)
    assert "rl/pg_loss" in m  # the policy loss is still computed and logged (weight grpo_coef=0)


def test_distil_sequence_term_refuses_micro_batches(params):  # noqa: F811
    batch = _batch(params)
    B, Tc = batch.completion_BxTc.shape
    batch = dataclasses.replace(
        batch,
        teacher_ids_BxTcxK=np.zeros((B, Tc, 2), np.int32),
        teacher_probs_BxTcxK=np.full((B, Tc, 2), 0.5, np.float32),
    )
    cfg = distil_lib.DistilConfig(enabled=True, top_k=2, sequence_term=True)
    with pytest.raises(ValueError, match="sequence term needs whole groups"):
        _run(params, batch, distil=cfg, num_micro=2)
    assert jnp.isfinite(_run(params, batch, distil=cfg)[1]["distil/seq_loss"])


def test_opd_with_the_student_as_teacher_leaves_the_params_unchanged(params):  # noqa: F811
    """Teacher == student: the OPD advantage is exactly 0 on every token, so the update is zero."""
    from rlvr_jax.objectives import opd as opd_lib

    batch = _batch(params, seed=6)
    teacher_logps = forward_lib.make_logps_fn(model_cfg=CFG)(
        params,
        batch.prompt_BxTp,
        batch.prompt_mask_BxTp,
        batch.completion_BxTc,
        batch.completion_mask_BxTc,
    )
    batch = dataclasses.replace(batch, old_logps_BxTc=np.asarray(teacher_logps))
    cfg = opd_lib.OPDConfig(enabled=True)
    adv = opd_lib.compute(cfg, batch.old_logps_BxTc, teacher_logps, batch.completion_mask_BxTc)
    assert float(jnp.max(jnp.abs(adv))) == 0.0
    adam = optax.adam(1e-2)
    step = step_lib.make_train_step(
        model_cfg=CFG, objective=objective_lib.compose(RL), optimizer=adam
    )
    state, m = step(state_lib.init_state(_copy(params), adam), batch.replace(adv_BxTc=adv))
    assert float(m["train/grad_norm"]) == 0.0
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(params), strict=True):
        np.testing.assert_array_equal(a, b)
