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

import chex
import jax
import jax.numpy as jnp
import optax
from flax import struct

from rlvr_jax import mesh as mesh_lib
from rlvr_jax.models import config as config_lib
from rlvr_jax.models import params as params_lib
from rlvr_jax.models import transformer
from rlvr_jax.objectives import delta as delta_lib
from rlvr_jax.objectives import distil as distil_lib
from rlvr_jax.objectives import policy_loss, rl_config
from rlvr_jax.train import state as state_lib

# Metrics aggregated like the loss (weighted by the aggregation's share); every other metric is a
# token mean (weighted by the token share) or, ending in _max, a maximum.
_LOSS_LIKE = frozenset({"rl/pg_loss"})
# Clip-Cov's random token choice: this key folded with the step and the micro-batch index.
_CLIP_COV_SEED = 0


@struct.dataclass
class CompletionForward:
    """What one forward pass over prompt + completion gives the losses, at the Tc positions that
    predict completion tokens."""

    logps_BxTc: jax.Array  # float32 log pi(y_t | s_t), tempered
    entropy_BxTc: jax.Array  # float32
    hidden_BxTcxD: jax.Array  # final-normed hidden states fed to the LM head (DelTA's h)
    logits_BxTcxV: jax.Array  # float32, tempered (DistIL's student distribution)


def completion_forward(
    params: params_lib.Params,
    prompt_BxTp: jax.Array,
    prompt_mask_BxTp: jax.Array,
    completion_BxTc: jax.Array,
    completion_mask_BxTc: jax.Array,
    *,
    model_cfg: config_lib.ModelConfig,
    temperature: float = 1.0,
) -> CompletionForward:
    """One forward pass over prompt + completion; only the Tc positions that predict completion
    tokens go through the LM head. Temperature matches the sampler's, so on-policy ratios are
    exactly 1."""
    chex.assert_equal_shape([prompt_BxTp, prompt_mask_BxTp])
    chex.assert_equal_shape([completion_BxTc, completion_mask_BxTc])
    Tp = prompt_BxTp.shape[1]
    tokens_BxT = jnp.concatenate([prompt_BxTp, completion_BxTc], axis=1)
    mask_BxT = jnp.concatenate([prompt_mask_BxTp, completion_mask_BxTc], axis=1)
    positions_BxT = transformer.positions_from_mask(mask_BxT)
    hidden_BxTxD, _ = transformer.decode_hidden(
        params, tokens_BxT, positions_BxT, mask_BxT, model_cfg
    )
    hidden_BxTcxD = hidden_BxTxD[:, Tp - 1 : -1]
    logits_BxTcxV = transformer.lm_logits(params, hidden_BxTcxD)
    logits_BxTcxV = logits_BxTcxV / (temperature if temperature > 0 else 1.0)
    return CompletionForward(
        logps_BxTc=policy_loss.token_logps(logits_BxTcxV, completion_BxTc),
        entropy_BxTc=policy_loss.entropy(logits_BxTcxV),
        hidden_BxTcxD=hidden_BxTcxD,
        logits_BxTcxV=logits_BxTcxV,
    )


def completion_logps(*args, **kwargs) -> tuple[jax.Array, jax.Array]:
    """Log-probs and entropies [B, Tc] of the completion tokens (see `completion_forward`)."""
    out = completion_forward(*args, **kwargs)
    return out.logps_BxTc, out.entropy_BxTc


def sequence_advantages(adv_BxTc: jax.Array, mask_BxTc: jax.Array) -> jax.Array:
    """Per-row advantage [B] from its broadcast per-token form (0 for rows without tokens)."""
    count_B = jnp.sum(mask_BxTc, axis=1, dtype=jnp.float32)
    return jnp.sum(jnp.where(mask_BxTc, adv_BxTc, 0.0), axis=1) / jnp.maximum(count_B, 1.0)


def delta_reweight(
    fwd: CompletionForward,
    tokens_BxTc: jax.Array,
    adv_BxTc: jax.Array,
    mask_BxTc: jax.Array,
    cfg: delta_lib.DeltaConfig,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """DelTA (docs/delta.md): the advantage times per-token coefficients from this forward's
    hidden states and probabilities (stop-gradient constants of the loss), and their stats."""
    sg = jax.lax.stop_gradient
    v_BxTcxD = delta_lib.token_grad_proxy(
        jnp.exp(sg(fwd.logps_BxTc)), sg(fwd.hidden_BxTcxD).astype(jnp.float32)
    )
    return _delta_from_proxy(v_BxTcxD, tokens_BxTc, adv_BxTc, mask_BxTc, cfg)


def _delta_from_proxy(v_BxTcxD, tokens_BxTc, adv_BxTc, mask_BxTc, cfg):
    adv_B = sequence_advantages(adv_BxTc, mask_BxTc)
    omega_BxTc, stats = delta_lib.coefficients(
        v_BxTcxD,
        adv_B,
        mask_BxTc,
        lam_min=cfg.lam_min,
        lam_max=cfg.lam_max,
        iters=cfg.iters,
        chunk=cfg.chunk,
        gamma=cfg.gamma,
    )
    stats.pop("omega_raw")
    # The weight DelTA leaves on token ids that occur in both correct and incorrect completions.
    stats["delta/shared_weight_share"] = delta_lib.shared_token_weight_share(
        omega_BxTc, tokens_BxTc, adv_B, mask_BxTc
    )
    return adv_BxTc * omega_BxTc, stats


def _agg_weight(mask_BxTc: jax.Array, total: jax.Array, rl: rl_config.RLConfig) -> jax.Array:
    """This micro-batch's share of the full batch's aggregation denominator."""
    if rl.loss_agg == "token_mean":
        part = jnp.sum(mask_BxTc, dtype=jnp.float32)
    elif rl.loss_agg == "seq_mean_token_mean":
        part = jnp.sum(jnp.any(mask_BxTc, axis=1), dtype=jnp.float32)
    else:  # seq_mean_token_sum_norm: a constant per row
        part = jnp.float32(mask_BxTc.shape[0])
    return part / jnp.maximum(total, 1.0)


def _agg_total(batch: state_lib.TrainBatch, rl: rl_config.RLConfig) -> jax.Array:
    """The full batch's aggregation denominator (before the norm_len constant)."""
    mask = batch.completion_mask_BxTc
    if rl.loss_agg == "token_mean":
        return jnp.sum(mask, dtype=jnp.float32)
    elif rl.loss_agg == "seq_mean_token_mean":
        return jnp.sum(jnp.any(mask, axis=1), dtype=jnp.float32)
    # every real row counts, an empty completion included; padding rows have no prompt
    return jnp.sum(jnp.any(batch.prompt_mask_BxTp, axis=1), dtype=jnp.float32)


def _loss_fn(
    params, mb: state_lib.TrainBatch, totals, key, *, model_cfg, rl, temperature, delta, distil, G
):
    agg_total, token_total = totals
    fwd = completion_forward(
        params,
        mb.prompt_BxTp,
        mb.prompt_mask_BxTp,
        mb.completion_BxTc,
        mb.completion_mask_BxTc,
        model_cfg=model_cfg,
        temperature=temperature,
    )
    adv_BxTc, extra = mb.adv_BxTc, {}
    if delta is not None:  # one micro-batch: the coefficients come from this very forward pass
        adv_BxTc, extra = delta_reweight(
            fwd, mb.completion_BxTc, adv_BxTc, mb.completion_mask_BxTc, delta
        )
    loss, metrics = policy_loss.policy_loss(
        fwd.logps_BxTc,
        mb.old_logps_BxTc,
        adv_BxTc,
        mb.completion_mask_BxTc,
        rl=rl,
        ref_logps_BxT=mb.ref_logps_BxTc,
        entropy_BxT=fwd.entropy_BxTc,
        key=key,
    )
    if distil is not None:  # forward CE to the feedback-conditioned teacher (docs/distil.md)
        d_loss, d_metrics = distil_lib.distil_loss(
            fwd.logits_BxTcxV,
            fwd.logps_BxTc,
            mb.teacher_ids_BxTcxK,
            mb.teacher_probs_BxTcxK,
            mb.completion_mask_BxTc,
            G=G,
            sequence_term=distil.sequence_term,
        )
        loss = distil.grpo_coef * loss + distil.coef * d_loss
        extra.update(d_metrics)
    metrics = {**metrics, **extra}
    weight = _agg_weight(mb.completion_mask_BxTc, agg_total, rl)
    tokens = jnp.sum(mb.completion_mask_BxTc, dtype=jnp.float32)
    token_weight = tokens / jnp.maximum(token_total, 1.0)
    # Means add up over micro-batches by their weights; maxima combine by max (see accumulate).
    metrics = {
        k: v if k.endswith("_max") else v * (weight if k in _LOSS_LIKE else token_weight)
        for k, v in metrics.items()
    }
    return loss * weight, metrics


def train_step(
    state: state_lib.TrainState,
    batch: state_lib.TrainBatch,
    *,
    model_cfg: config_lib.ModelConfig,
    rl: rl_config.RLConfig,
    optimizer: optax.GradientTransformation,
    temperature: float,
    num_micro: int,
    delta: delta_lib.DeltaConfig | None = None,
    distil: distil_lib.DistilConfig | None = None,
) -> tuple[state_lib.TrainState, dict[str, jax.Array]]:
    """One optimizer update on `batch`, accumulated over `num_micro` micro-batches.

    `delta` (DelTA) reweights the advantage per token; its centroids span the whole batch, so with
    several micro-batches a no-grad pass collects the token-gradient proxies first (with one, they
    come from the loss's own forward). With several updates per rollout batch, pass None here and
    fold the coefficients in once beforehand (`make_delta_fn`). `distil` adds DistIL's forward CE
    to the teacher top-k in the batch, weighted against the policy loss by `distil.coef` /
    `distil.grpo_coef`.
    """
    B = batch.completion_BxTc.shape[0]
    if B % num_micro:
        raise ValueError(f"batch of {B} rows does not split into {num_micro} micro-batches")
    if distil is not None and distil.sequence_term and num_micro > 1:
        raise ValueError("DistIL's sequence term needs whole groups: use one micro-batch")
    delta_stats = {}
    if delta is not None and num_micro > 1:
        batch, delta_stats = _delta_prepass(
            state.params, batch, num_micro, delta, model_cfg, temperature
        )
        delta = None
    mask = batch.completion_mask_BxTc
    totals = (_agg_total(batch, rl), jnp.sum(mask, dtype=jnp.float32))
    keys = jnp.zeros((num_micro,), jnp.uint32)  # unused: only Clip-Cov draws random numbers
    if rl.policy_loss == "clip_cov":
        step_key = jax.random.fold_in(jax.random.key(_CLIP_COV_SEED), state.step)
        keys = jax.vmap(lambda i: jax.random.fold_in(step_key, i))(jnp.arange(num_micro))
    # Strided micro-batches (row i goes to micro-batch i % num_micro): the batch is split over
    # devices in contiguous blocks, so every device holds its share of every micro-batch and the
    # scan needs no resharding.
    micro = jax.tree.map(
        lambda x: x.reshape(B // num_micro, num_micro, *x.shape[1:]).swapaxes(0, 1), batch
    )
    G = rl.group_size
    grad_fn = jax.value_and_grad(
        functools.partial(
            _loss_fn,
            model_cfg=model_cfg,
            rl=rl,
            temperature=temperature,
            delta=delta,
            distil=distil,
            G=G,
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
    updates, new_opt_state = optimizer.update(grads, state.opt_state, state.params)
    new_params = optax.apply_updates(state.params, updates)
    # A NaN/inf loss or gradient leaves the state untouched (and is never checkpointed).
    keep = lambda new, old: jnp.where(finite, new, old)
    new_state = state_lib.TrainState(
        step=state.step + finite.astype(jnp.int32),
        params=jax.tree.map(keep, new_params, state.params),
        opt_state=jax.tree.map(keep, new_opt_state, state.opt_state),
    )
    metrics = {**metrics, **delta_stats}
    metrics.update(
        {
            "train/loss": loss,
            "train/grad_norm": grad_norm,
            "train/skipped": 1.0 - finite.astype(jnp.float32),
            "train/tokens": jnp.sum(mask, dtype=jnp.float32),
        }
    )
    return new_state, metrics


def _delta_prepass(params, batch, num_micro, cfg, model_cfg, temperature):
    """DelTA over several micro-batches: proxies from a no-grad pass per micro-batch, then the
    coefficients over the whole batch, folded into its advantages."""
    B = batch.completion_BxTc.shape[0]
    rows = (batch.prompt_BxTp, batch.prompt_mask_BxTp, batch.completion_BxTc)
    rows += (batch.completion_mask_BxTc,)
    strided = [x.reshape(B // num_micro, num_micro, *x.shape[1:]).swapaxes(0, 1) for x in rows]

    def proxy(mb):
        fwd = completion_forward(params, *mb, model_cfg=model_cfg, temperature=temperature)
        return delta_lib.token_grad_proxy(
            jnp.exp(fwd.logps_BxTc), fwd.hidden_BxTcxD.astype(jnp.float32)
        )

    v_MxBmxTcxD = jax.lax.map(proxy, strided)
    v_BxTcxD = v_MxBmxTcxD.swapaxes(0, 1).reshape(B, *v_MxBmxTcxD.shape[2:])
    adv_BxTc, stats = _delta_from_proxy(
        jax.lax.stop_gradient(v_BxTcxD),
        batch.completion_BxTc,
        batch.adv_BxTc,
        batch.completion_mask_BxTc,
        cfg,
    )
    return batch.replace(adv_BxTc=adv_BxTc), stats


def make_delta_fn(
    *,
    model_cfg: config_lib.ModelConfig,
    delta: delta_lib.DeltaConfig,
    temperature: float = 1.0,
    num_micro: int = 1,
    param_shardings: params_lib.Params | None = None,
):
    """Jitted `(params, batch) -> (batch, stats)`: DelTA's coefficients computed once over a whole
    rollout batch with `params` (the pre-update policy, as the authors do) and folded into its
    advantages, for rl.num_updates > 1 (then the train steps get delta=None). The proxies come
    from `num_micro` sequential no-grad passes; the batch is split over data x fsdp if sharded."""

    def fn(params, batch):
        return _delta_prepass(params, batch, num_micro, delta, model_cfg, temperature)

    if param_shardings is None:
        return jax.jit(fn)
    mesh = jax.tree.leaves(param_shardings)[0].mesh
    rows = mesh_lib.batch_sharding(mesh)
    return jax.jit(
        fn, in_shardings=(param_shardings, rows), out_shardings=(rows, mesh_lib.replicated(mesh))
    )


def make_train_step(
    *,
    model_cfg: config_lib.ModelConfig,
    rl: rl_config.RLConfig,
    optimizer: optax.GradientTransformation,
    temperature: float = 1.0,
    num_micro: int = 1,
    shardings: state_lib.TrainState | None = None,
    delta: delta_lib.DeltaConfig | None = None,
    distil: distil_lib.DistilConfig | None = None,
):
    """The jitted train step, state donated (the caller must not reuse the state it passes in).

    With `shardings` (state_lib.state_shardings), the state keeps them across the step, the batch is
    split over the mesh's data x fsdp axes and the metrics come back replicated.
    """
    step = functools.partial(
        train_step,
        model_cfg=model_cfg,
        rl=rl,
        optimizer=optimizer,
        temperature=temperature,
        num_micro=num_micro,
        delta=delta if delta is not None and delta.enabled else None,
        distil=distil if distil is not None and distil.enabled else None,
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


def make_completion_fn(
    head,
    *,
    model_cfg: config_lib.ModelConfig,
    temperature: float = 1.0,
    param_shardings: params_lib.Params | None = None,
    num_micro: int = 1,
):
    """Jitted, no-grad `head(completion_forward(...))` over (params, prompt, prompt mask,
    completion, completion mask): every output leaf keeps the rows as its leading axis. With
    `param_shardings`, the rows are split over the mesh's data x fsdp axes.

    `num_micro` > 1 scores the rows in that many sequential micro-batches (strided, as the train
    step's), so the activations and logits of only one are alive at a time.
    """

    def one(params, *rows):
        return head(completion_forward(params, *rows, model_cfg=model_cfg, temperature=temperature))

    def scored(params, *rows):
        B = rows[0].shape[0]
        if num_micro == 1:
            return one(params, *rows)
        if B % num_micro:
            raise ValueError(f"{B} rows do not split into {num_micro} reference micro-batches")
        micro = [x.reshape(B // num_micro, num_micro, *x.shape[1:]).swapaxes(0, 1) for x in rows]
        out = jax.lax.map(lambda mb: one(params, *mb), micro)  # leaves [M, B/M, ...]
        return jax.tree.map(lambda x: x.swapaxes(0, 1).reshape(B, *x.shape[2:]), out)

    if param_shardings is None:
        return jax.jit(scored)
    rows = mesh_lib.batch_sharding(jax.tree.leaves(param_shardings)[0].mesh)
    return jax.jit(scored, in_shardings=(param_shardings, *[rows] * 4), out_shardings=rows)


def make_logps_fn(**kwargs):
    """Jitted completion log-probs [B, Tc] (reference, teacher or old-policy scoring), no grad;
    arguments as `make_completion_fn`."""
    return make_completion_fn(lambda fwd: fwd.logps_BxTc, **kwargs)


def sft_step(
    state: state_lib.TrainState,
    batch: state_lib.TrainBatch,
    *,
    model_cfg: config_lib.ModelConfig,
    optimizer: optax.GradientTransformation,
) -> tuple[state_lib.TrainState, dict[str, jax.Array]]:
    """Supervised warm start: token-mean cross-entropy of the completion given the prompt."""

    def loss_fn(params):
        logps_BxTc, _ = completion_logps(
            params,
            batch.prompt_BxTp,
            batch.prompt_mask_BxTp,
            batch.completion_BxTc,
            batch.completion_mask_BxTc,
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
