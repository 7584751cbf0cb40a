"""The pure train step: on-policy loss value, micro-batch invariance, NaN skip, compile once."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rlvr_jax.models import config as config_lib
from rlvr_jax.models import params as params_lib
from rlvr_jax.objectives import batch as batch_lib
from rlvr_jax.objectives import forward as forward_lib
from rlvr_jax.objectives import objective as objective_lib
from rlvr_jax.objectives import rl_config
from rlvr_jax.train import state as state_lib
from rlvr_jax.train import step as step_lib

CFG = dataclasses.replace(config_lib.get_preset("tiny"), num_layers=2, vocab_size=64)
RL = rl_config.RLConfig(group_size=2)
OPT = state_lib.make_optimizer(state_lib.OptConfig(lr=1e-2))


def _batch(params, seed=0, B=4, Tp=8, Tc=8) -> batch_lib.TrainBatch:
    rng = np.random.default_rng(seed)
    prompt_mask = np.ones((B, Tp), bool)
    prompt_mask[1, :3] = False  # left padding
    comp_mask = np.ones((B, Tc), bool)
    comp_mask[2, 5:] = False  # right padding
    comp_mask[3, 2:] = False
    prompt = rng.integers(0, CFG.vocab_size, (B, Tp), dtype=np.int32)
    comp = rng.integers(0, CFG.vocab_size, (B, Tc), dtype=np.int32)
    logps = forward_lib.make_logps_fn(model_cfg=CFG)(params, prompt, prompt_mask, comp, comp_mask)
    adv = np.where(comp_mask, np.array([1.0, -1.0, 0.5, -0.5], np.float32)[:, None], 0.0)
    return batch_lib.TrainBatch(
        prompt_BxTp=prompt,
        prompt_mask_BxTp=prompt_mask,
        completion_BxTc=comp,
        completion_mask_BxTc=comp_mask,
        old_logps_BxTc=np.asarray(logps),
        adv_BxTc=adv.astype(np.float32),
    )


@pytest.fixture(scope="module")
def params():
    return params_lib.init_params(CFG, jax.random.key(0))


def _copy(tree):
    return jax.tree.map(lambda x: jnp.array(x, copy=True), tree)


def test_on_policy_loss_is_minus_mean_advantage(params):
    batch = _batch(params)
    step = step_lib.make_train_step(
        model_cfg=CFG, objective=objective_lib.compose(RL), optimizer=OPT
    )
    _, m = step(state_lib.init_state(_copy(params), OPT), batch)
    mask = batch.completion_mask_BxTc
    expected = -np.sum(batch.adv_BxTc * mask) / mask.sum()
    np.testing.assert_allclose(m["train/loss"], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(m["rl/ratio_mean"], 1.0, atol=1e-5)
    assert m["train/skipped"] == 0


@pytest.mark.parametrize("agg", ["token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm"])
def test_micro_batches_do_not_change_the_update(params, agg):
    rl = dataclasses.replace(RL, loss_agg=agg, norm_len=8)
    batch = _batch(params, seed=1)
    outs = []
    sgd = optax.sgd(1e-2)  # Adam's first step is ~lr * sign(g): a float-level change flips it
    for n in (1, 2):
        step = step_lib.make_train_step(
            model_cfg=CFG, objective=objective_lib.compose(rl), optimizer=sgd, num_micro=n
        )
        outs.append(step(state_lib.init_state(_copy(params), sgd), batch))
    for state, m in outs[1:]:
        np.testing.assert_allclose(m["train/loss"], outs[0][1]["train/loss"], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(m["train/grad_norm"], outs[0][1]["train/grad_norm"], rtol=1e-4)
        for a, b in zip(
            jax.tree.leaves(state.params), jax.tree.leaves(outs[0][0].params), strict=True
        ):
            np.testing.assert_allclose(a, b, atol=1e-6)


def test_nan_loss_skips_the_update(params):
    batch = _batch(params, seed=2)
    batch = batch.replace(adv_BxTc=np.full_like(batch.adv_BxTc, np.nan))
    step = step_lib.make_train_step(
        model_cfg=CFG, objective=objective_lib.compose(RL), optimizer=OPT
    )
    before = _copy(params)
    state, m = step(state_lib.init_state(_copy(params), OPT), batch)
    assert m["train/skipped"] == 1
    assert int(state.step) == 0
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(before), strict=True):
        np.testing.assert_array_equal(a, b)


def test_update_lowers_the_loss_and_compiles_once(params):
    batch = _batch(params, seed=3)
    step = step_lib.make_train_step(
        model_cfg=CFG, objective=objective_lib.compose(RL), optimizer=OPT
    )
    state = state_lib.init_state(_copy(params), OPT)
    losses = []
    for _ in range(3):
        # Re-anchor old log-probs each step: loss = -mean(A) on policy, so watch the objective
        # through the log-prob of positive-advantage tokens instead.
        state, m = step(state, batch)
        losses.append(float(m["train/loss"]))
    assert step._cache_size() == 1
    assert int(state.step) == 3
    assert losses[-1] < losses[0]  # ratios move towards the advantage sign


def test_reference_micro_batches_give_the_same_log_probs(params):
    """train.ref_micro_batches: strided sequential micro-batches, the same rows back in order."""
    b = _batch(params, seed=2)
    rows = (b.prompt_BxTp, b.prompt_mask_BxTp, b.completion_BxTc, b.completion_mask_BxTc)
    whole = forward_lib.make_logps_fn(model_cfg=CFG)(params, *rows)
    for n in (2, 4):
        micro = forward_lib.make_logps_fn(model_cfg=CFG, num_micro=n)(params, *rows)
        np.testing.assert_allclose(micro, whole, atol=1e-5)
    with pytest.raises(ValueError, match="4 rows do not split into 3 reference micro-batches"):
        forward_lib.make_logps_fn(model_cfg=CFG, num_micro=3)(params, *rows)


@pytest.mark.parametrize("num_micro", [1, 2])
def test_logged_token_means_ignore_padding_rows_under_every_aggregation(params, num_micro):
    """rl/entropy and rl/ratio_mean are true token means of the real completion tokens, whatever
    loss_agg: a constant-denominator aggregation counts padding rows, the metrics must not."""
    batch = _batch(params, seed=4)
    mask = batch.completion_mask_BxTc
    rows = (batch.prompt_BxTp, batch.prompt_mask_BxTp, batch.completion_BxTc, mask)
    _, entropy = jax.jit(lambda p, *r: forward_lib.completion_logps(p, *r, model_cfg=CFG))(
        params, *rows
    )
    expected = float(np.sum(np.where(mask, entropy, 0.0)) / mask.sum())
    padded = jax.tree.map(lambda x: np.concatenate([x, np.zeros_like(x)]), batch)  # 4 empty rows
    metrics = []
    for agg in ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm"):
        rl = dataclasses.replace(RL, loss_agg=agg, norm_len=8)
        step = step_lib.make_train_step(
            model_cfg=CFG, objective=objective_lib.compose(rl), optimizer=OPT, num_micro=num_micro
        )
        _, m = step(state_lib.init_state(_copy(params), OPT), padded)
        np.testing.assert_allclose(m["rl/entropy"], expected, rtol=1e-5, err_msg=agg)
        np.testing.assert_allclose(m["rl/ratio_mean"], 1.0, rtol=1e-5, err_msg=agg)
        metrics.append(m)
    # On policy: the sampler-vs-trainer mismatch metrics read (numerically) zero.
    assert all(float(m["rl/approx_kl"]) < 1e-6 for m in metrics)
    assert all(float(m["rl/log_ratio_abs_max"]) < 1e-5 for m in metrics)
