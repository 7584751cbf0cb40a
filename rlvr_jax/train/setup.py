"""The mesh and the model a run builds from its config: devices, model config, tokenizer and the
initial weights.

Every check here runs before anything is compiled, so a bad config fails in seconds with the key
named. Parameters are created directly in their shardings: a preset's random init is one jitted
function with sharded outputs, an HF checkpoint is placed tensor by tensor, shard by shard.
"""

# pylint: disable=invalid-name
from __future__ import annotations

import dataclasses

import jax
import numpy as np
from jax.sharding import Mesh

from rlvr_jax import mesh as mesh_lib
from rlvr_jax.errors import ConfigError
from rlvr_jax.models import config as config_lib
from rlvr_jax.models import hf
from rlvr_jax.models import params as params_lib
from rlvr_jax.models import tokenizer as tokenizer_lib
from rlvr_jax.train import run_config


def make_mesh(cfg: run_config.RunConfig) -> Mesh:
    """The (data, fsdp, tensor) mesh of `cfg.mesh.shape` over every process's devices."""
    try:
        return mesh_lib.make_mesh(cfg.mesh.shape)
    except ValueError as e:
        raise ConfigError(f"mesh.shape={cfg.mesh.shape}: {e}") from None


def make_sampler_mesh(cfg: run_config.RunConfig, mesh: Mesh) -> Mesh:
    """The sampler's mesh: `mesh` itself, or `cfg.mesh.sampler` on a subset or re-layout of its
    devices (mesh.sub_mesh)."""
    if not cfg.mesh.sampler:
        return mesh
    try:
        sampler_mesh = mesh_lib.sub_mesh(cfg.mesh.sampler, mesh)
    except ValueError as e:
        raise ConfigError(f"mesh.sampler={cfg.mesh.sampler}: {e}") from None
    if jax.process_count() > 1 and sampler_mesh.devices.size < mesh.devices.size:
        # jax.device_put reshards across hosts only between shardings of one device set.
        raise ConfigError(
            f"mesh.sampler={cfg.mesh.sampler} takes {sampler_mesh.devices.size} of the "
            f"{mesh.devices.size} devices; with {jax.process_count()} processes the sampler "
            "must use all of them (another layout, e.g. a data mesh without fsdp)"
        )
    return sampler_mesh


def load_model(
    cfg: run_config.RunConfig,
) -> tuple[config_lib.ModelConfig, tokenizer_lib.Tokenizer]:
    """(model config, tokenizer) of an HF folder or a preset; `init_params` makes the weights."""
    dtypes = dict(param_dtype=cfg.model.param_dtype, compute_dtype=cfg.model.compute_dtype)
    memory = dict(
        remat=cfg.model.remat,
        logits_chunk=cfg.model.logits_chunk,
        attention_chunk=cfg.model.attention_chunk,
    )
    if cfg.model.init_from:
        model_cfg = config_lib.read_hf_config(cfg.model.init_from, **dtypes)
        model_cfg = dataclasses.replace(model_cfg, **memory)
        tok = tokenizer_lib.load_tokenizer(cfg.model.init_from)
    else:
        model_cfg = config_lib.get_preset(cfg.model.preset, **memory, **dtypes)
        tok = tokenizer_lib.load_tiny_tokenizer()
        if cfg.model.tokenizer:
            try:
                tok = tokenizer_lib.load_tokenizer(cfg.model.tokenizer)
            except (FileNotFoundError, ValueError) as e:
                raise ConfigError(f"model.tokenizer={cfg.model.tokenizer!r}: {e}") from None
            model_cfg = dataclasses.replace(model_cfg, vocab_size=tok.vocab_size)
        if cfg.model.rope_theta:
            model_cfg = dataclasses.replace(model_cfg, rope_theta=cfg.model.rope_theta)
    if tok.vocab_size > model_cfg.vocab_size:
        raise ConfigError(
            f"tokenizer has {tok.vocab_size} tokens but model.vocab_size={model_cfg.vocab_size}"
        )
    return model_cfg, tok


def init_params(
    cfg: run_config.RunConfig,
    model_cfg: config_lib.ModelConfig,
    shardings: params_lib.Params,
) -> params_lib.Params:
    """The initial weights in their `shardings`: cfg.model.init_from's, or a random init."""
    if cfg.model.init_from:
        return hf.load_params(cfg.model.init_from, model_cfg, shardings=shardings)
    init = jax.jit(
        lambda seed: params_lib.init_params(model_cfg, jax.random.key(seed)),
        out_shardings=shardings,
    )
    return init(np.uint32(cfg.seed))
