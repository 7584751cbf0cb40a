"""The pure train step: policy-gradient loss, micro-batched gradient accumulation, one optimizer
update.

`train_step(state, batch) -> (state, metrics)` is jitted once by `make_train_step`, with the state
donated and, given the state's shardings, the batch split over the mesh's data x fsdp axes. The
loss is the same number whatever the micro-batch count: each micro-batch's aggregate is weighted by
its share of the aggregation's denominator (tokens, sequences or rows). Logged token means
(entropy, ratio, KL, clip fractions) are weighted by the micro-batch's share of the completion
tokens instead, so they are true token means whatever the aggregation. Padding rows (no prompt and
no completion tokens; see rollout.pad_rows) change neither the loss nor the update. A non-finite
loss or gradient skips the update (params and optimizer state unchanged) and reports
`train/skipped`.
"""

# pylint: disable=invalid-name
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax

from rlvr_jax import mesh as mesh_lib
from rlvr_jax.models import config as config_lib
from rlvr_jax.objectives import batch as batch_lib
from rlvr_jax.objectives import forward as forward_lib
from rlvr_jax.objectives import objective as objective_lib
from rlvr_jax.objectives import policy_loss, rl_config
from rlvr_jax.train import state as state_lib

# Metrics aggregated like the loss (weighted by the aggregation's share); every other metric is a
# token mean (weighted by the token share) or, ending in _max, a maximum.
_LOSS_LIKE = frozenset({"rl/pg_loss"})
# Clip-Cov's random token choice: this key folded with the step and the micro-batch index.
_CLIP_COV_SEED = 0


def _agg_count(mask_BxTc: jax.Array, rows: jax.Array, rl: rl_config.RLConfig) -> jax.Array:
    """The loss aggregation's denominator over these rows (before the norm_len constant): tokens,
    sequences with tokens, or `rows` (seq_mean_token_sum_norm: a constant per row)."""
    if rl.loss_agg == "token_mean":
        return jnp.sum(mask_BxTc, dtype=jnp.float32)
    if rl.loss_agg == "seq_mean_token_mean":
        return jnp.sum(jnp.any(mask_BxTc, axis=1), dtype=jnp.float32)
    return jnp.asarray(rows, jnp.float32)


def _loss_fn(
    params, mb: batch_lib.TrainBatch, totals, key, *, model_cfg, objective, temperature, num_micro
):
    agg_total, token_total = totals
    rl = objective.rl
    fwd = forward_lib.completion_forward(
        params,
        mb.prompt_BxTp,
        mb.prompt_mask_BxTp,
        mb.completion_BxTc,
        batch_lib.attention_mask(mb),
        model_cfg=model_cfg,
        temperature=temperature,
        # DistIL's student log-probs at the teacher's top-k, gathered inside the (chunked) head.
        gather_ids_BxTcxK=mb.teacher_ids_BxTcxK,
    )
    adv_BxTc, extra = mb.adv_BxTc, {}
    for term in objective.terms:  # e.g. DelTA's coefficients from this very forward pass
        adv_BxTc, m = term.advantages(fwd, mb, adv_BxTc, num_micro=num_micro)
        extra.update(m)
    loss, metrics = policy_loss.policy_loss(
        fwd.logps_BxTc,
        mb.old_logps_BxTc,
        adv_BxTc,
        mb.completion_mask_BxTc,
        rl=rl,
        ref_logps_BxT=mb.ref_logps_BxTc,
        entropy_BxT=fwd.entropy_BxTc,
        key=key,
        trainer_logps_BxT=mb.trainer_logps_BxTc,
    )
    for term in objective.terms:  # e.g. DistIL's forward CE to the teacher
        loss, m = term.loss(fwd, mb, loss, G=rl.group_size)
        extra.update(m)
    metrics = {**metrics, **extra}
    # The micro-batch's share of the batch's denominator; policy_loss divided by its own count,
    # which for seq_mean_token_sum_norm includes padding rows (their loss is 0).
    mask = mb.completion_mask_BxTc
    weight = _agg_count(mask, mask.shape[0], rl) / jnp.maximum(agg_total, 1.0)
    tokens = jnp.sum(mask, dtype=jnp.float32)
    token_weight = tokens / jnp.maximum(token_total, 1.0)
    # Means add up over micro-batches by their weights; maxima combine by max (see accumulate).
    metrics = {
        k: v if k.endswith("_max") else v * (weight if k in _LOSS_LIKE else token_weight)
        for k, v in metrics.items()
    }
    return loss * weight, metrics


def train_step(
    state: state_lib.TrainState,
    batch: batch_lib.TrainBatch,
    *,
    model_cfg: config_lib.ModelConfig,
    objective: objective_lib.Objective,
    optimizer: optax.GradientTransformation,
    temperature: float,
    num_micro: int,
) -> tuple[state_lib.TrainState, dict[str, jax.Array]]:
    """One optimizer update on `batch`, accumulated over `num_micro` micro-batches.

    `objective` is the loss: `objective.rl`'s policy-gradient family plus its terms, which may
    fold something into the whole batch first (`prepass`: DelTA's coefficients when there are
    several micro-batches), reweight each micro-batch's advantages, or add to its loss (DistIL).
    """
    B = batch.completion_BxTc.shape[0]
    if B % num_micro:
        raise ValueError(f"batch of {B} rows does not split into {num_micro} micro-batches")
    objective.check(num_micro)
    rl = objective.rl
    pre_stats = {}
    for term in objective.terms:
        batch, stats = term.prepass(
            state.params, batch, num_micro=num_micro, model_cfg=model_cfg, temperature=temperature
        )
        pre_stats.update(stats)
    mask = batch.completion_mask_BxTc
    real_rows = jnp.sum(jnp.any(batch.prompt_mask_BxTp, axis=1))  # padding rows have no prompt
    totals = (_agg_count(mask, real_rows, rl), jnp.sum(mask, dtype=jnp.float32))
    keys = jnp.zeros((num_micro,), jnp.uint32)  # unused: only Clip-Cov draws random numbers
    if rl.policy_loss == "clip_cov":
        step_key = jax.random.fold_in(jax.random.key(_CLIP_COV_SEED), state.step)
        keys = jax.vmap(lambda i: jax.random.fold_in(step_key, i))(jnp.arange(num_micro))
    micro = jax.tree.map(lambda x: forward_lib.to_micro(x, num_micro), batch)
    grad_fn = jax.value_and_grad(
        functools.partial(
            _loss_fn,
            model_cfg=model_cfg,
            objective=objective,
            temperature=temperature,
            num_micro=num_micro,
        ),
        has_aux=True,
    )

    use_key = lambda key: key if rl.policy_loss == "clip_cov" else None

    def accumulate(carry, xs):
        grads, loss, metrics = carry
        mb, key = xs
        (mb_loss, mb_metrics), mb_grads = grad_fn(state.params, mb, totals, use_key(key))
        grads = jax.tree.map(jnp.add, grads, mb_grads)
        metrics = {
            k: jnp.maximum(v, mb_metrics[k]) if k.endswith("_max") else v + mb_metrics[k]
            for k, v in metrics.items()
        }
        return (grads, loss + mb_loss, metrics), None

    first_mb, first_key = jax.tree.map(lambda x: x[0], (micro, keys))
    if num_micro == 1:
        # One micro-batch needs no loop; measured on the 30M step (benchmarks/train_overhead.py)
        # this gains ~1%: the step's overhead over the bare gradient is not the scan.
        (loss, metrics), grads = grad_fn(state.params, first_mb, totals, use_key(first_key))
    else:
        metrics_shape = jax.eval_shape(
            lambda: grad_fn(state.params, first_mb, totals, use_key(first_key))[0][1]
        )
        zeros = (
            jax.tree.map(jnp.zeros_like, state.params),
            jnp.zeros((), jnp.float32),
            {
                k: jnp.full(s.shape, -jnp.inf if k.endswith("_max") else 0.0, s.dtype)
                for k, s in metrics_shape.items()
            },
        )
        (grads, loss, metrics), _ = jax.lax.scan(accumulate, zeros, (micro, keys))

    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)

    # A NaN/inf loss or gradient leaves the state untouched (and is never checkpointed). A cond
    # rather than a `where` over every leaf: the update runs only when finite, in place.
    def apply(operand):
        params, opt_state, grads = operand
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    new_params, new_opt_state = jax.lax.cond(
        finite, apply, lambda operand: operand[:2], (state.params, state.opt_state, grads)
    )
    new_state = state_lib.TrainState(
        step=state.step + finite.astype(jnp.int32), params=new_params, opt_state=new_opt_state
    )
    metrics = {**metrics, **pre_stats}
    metrics.update(
        {
            "train/loss": loss,
            "train/grad_norm": grad_norm,
            "train/skipped": 1.0 - finite.astype(jnp.float32),
            "train/tokens": jnp.sum(mask, dtype=jnp.float32),
        }
    )
    return new_state, metrics


def make_train_step(
    *,
    model_cfg: config_lib.ModelConfig,
    objective: objective_lib.Objective,
    optimizer: optax.GradientTransformation,
    temperature: float = 1.0,
    num_micro: int = 1,
    shardings: state_lib.TrainState | None = None,
):
    """The jitted train step, state donated (the caller must not reuse the state it passes in).

    With `shardings` (state_lib.state_shardings), the state keeps them across the step, the batch is
    split over the mesh's data x fsdp axes and the metrics come back replicated.
    """
    step = functools.partial(
        train_step,
        model_cfg=model_cfg,
        objective=objective,
        optimizer=optimizer,
        temperature=temperature,
        num_micro=num_micro,
    )
    return _jit(step, shardings)


def _jit(step, shardings: state_lib.TrainState | None):
    """`step(state, batch) -> (state, metrics)` jitted, state donated, on the mesh if given."""
    if shardings is None:
        return jax.jit(step, donate_argnums=0)
    mesh = shardings.step.mesh
    return jax.jit(
        step,
        in_shardings=(shardings, mesh_lib.batch_sharding(mesh)),
        out_shardings=(shardings, mesh_lib.replicated(mesh)),
        donate_argnums=0,
    )


def sft_step(
    state: state_lib.TrainState,
    batch: batch_lib.TrainBatch,
    *,
    model_cfg: config_lib.ModelConfig,
    optimizer: optax.GradientTransformation,
) -> tuple[state_lib.TrainState, dict[str, jax.Array]]:
    """Supervised warm start: token-mean cross-entropy of the completion given the prompt."""

    def loss_fn(params):
        logps_BxTc, _ = forward_lib.completion_logps(
            params,
            batch.prompt_BxTp,
            batch.prompt_mask_BxTp,
            batch.completion_BxTc,
            batch_lib.attention_mask(batch),
            model_cfg=model_cfg,
        )
        mask = batch.completion_mask_BxTc
        return -jnp.sum(logps_BxTc * mask) / jnp.maximum(jnp.sum(mask), 1)

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new_state = state_lib.TrainState(step=state.step + 1, params=params, opt_state=opt_state)
    return new_state, {"warm/loss": loss, "warm/grad_norm": optax.tree.norm(grads)}


def make_sft_step(
    *,
    model_cfg: config_lib.ModelConfig,
    optimizer: optax.GradientTransformation,
    shardings: state_lib.TrainState | None = None,
):
    """The jitted warm-start step, state donated; sharded like `make_train_step`."""
    return _jit(functools.partial(sft_step, model_cfg=model_cfg, optimizer=optimizer), shardings)
