"""TrainState: the pytree that crosses the jitted train step, and the optimizer.

Dimension legend (see also rlvr_jax/sampling.py): B sequences (prompts x G), Tp prompt length (left
padded), Tc completion length (right padded).
"""

# pylint: disable=invalid-name
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import optax
from flax import struct
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from rlvr_jax.models import params as params_lib

SCHEDULES = ("constant", "cosine", "linear")


@struct.dataclass
class TrainState:
    """Everything the train step updates; donated to it. The reference model lives elsewhere."""

    step: jax.Array  # int32 scalar: optimizer updates applied
    params: params_lib.Params
    opt_state: optax.OptState


@dataclasses.dataclass(frozen=True, kw_only=True)
class OptConfig:
    """The optimizer: AdamW with global-norm clipping and a warmup + decay schedule."""

    lr: float = 1e-6  # peak learning rate
    schedule: str = "constant"  # one of SCHEDULES, after warmup
    warmup_steps: int = 0  # optimizer updates
    total_steps: int = 1  # optimizer updates, for decaying schedules
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0
    grad_clip: float = 1.0  # global-norm clip; 0 disables

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise ValueError(f"OptConfig.schedule={self.schedule!r} is not one of {SCHEDULES}")
        if self.lr <= 0:
            raise ValueError(f"OptConfig.lr={self.lr} must be > 0")
        if self.warmup_steps < 0 or self.total_steps < 1:
            raise ValueError("OptConfig.warmup_steps must be >= 0 and total_steps >= 1")


def make_schedule(cfg: OptConfig) -> optax.Schedule:
    decay_steps = max(cfg.total_steps - cfg.warmup_steps, 1)
    if cfg.schedule == "constant":
        after = optax.constant_schedule(cfg.lr)
    elif cfg.schedule == "cosine":
        after = optax.cosine_decay_schedule(cfg.lr, decay_steps)
    else:
        after = optax.linear_schedule(cfg.lr, 0.0, decay_steps)
    if not cfg.warmup_steps:
        return after
    warmup = optax.linear_schedule(0.0, cfg.lr, cfg.warmup_steps)
    return optax.join_schedules([warmup, after], [cfg.warmup_steps])


def make_optimizer(cfg: OptConfig) -> optax.GradientTransformation:
    parts = [optax.clip_by_global_norm(cfg.grad_clip)] if cfg.grad_clip else []
    parts.append(
        optax.adamw(
            make_schedule(cfg), b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay
        )
    )
    return optax.chain(*parts)


def init_state(params: params_lib.Params, optimizer: optax.GradientTransformation) -> TrainState:
    return TrainState(
        step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params)
    )


def state_shardings(
    param_shardings: params_lib.Params, optimizer: optax.GradientTransformation
) -> TrainState:
    """Shardings of every TrainState leaf: each optimizer moment follows its parameter (found by
    `optax.tree_map_params`); the step and the optimizer's counters are replicated."""
    mesh = jax.tree.leaves(param_shardings)[0].mesh
    replicated = NamedSharding(mesh, P())
    return TrainState(
        step=replicated,
        params=param_shardings,
        opt_state=optax.tree_map_params(
            optimizer,
            lambda _, shd: shd,
            jax.eval_shape(optimizer.init, _abstract(param_shardings)),
            param_shardings,
            transform_non_params=lambda _: replicated,
        ),
    )


def _abstract(param_shardings: params_lib.Params) -> params_lib.Params:
    """Float32 scalars with the params' structure: all `tree_map_params` needs to find them."""
    return jax.tree.map(lambda _: jax.ShapeDtypeStruct((), jnp.float32), param_shardings)


def make_init_state(optimizer: optax.GradientTransformation, shardings: TrainState):
    """Jitted `params -> TrainState` that builds the optimizer state directly in its shardings.

    The params are donated (the state takes over their buffers): the caller must not reuse them.
    """
    return jax.jit(
        functools.partial(init_state, optimizer=optimizer),
        in_shardings=(shardings.params,),
        out_shardings=shardings,
        donate_argnums=0,
    )
