"""What the loop builds from its config before training: mesh, model, tokenizer, data, scoring,
checks.

Every check here runs before anything is compiled, so a bad config fails in seconds with the key
named. Parameters are created directly in their shardings: a preset's random init is one jitted
function with sharded outputs, an HF checkpoint is placed tensor by tensor, shard by shard.
"""

# pylint: disable=invalid-name
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh

from rlvr_jax import mesh as mesh_lib
from rlvr_jax.data import files as files_lib
from rlvr_jax.data import synthetic
from rlvr_jax.data import types as data_types
from rlvr_jax.models import config as config_lib
from rlvr_jax.models import hf
from rlvr_jax.models import params as params_lib
from rlvr_jax.models import tokenizer as tokenizer_lib
from rlvr_jax.objectives import rl_config
from rlvr_jax.rewards import math as math_lib
from rlvr_jax.rewards import pool as pool_lib

FILE_FORMATS = ("gsm8k", "math", "answer", "parquet")  # data.files.load kinds
SOURCES = ("synthetic", *FILE_FORMATS, "code", "rubric")  # code, rubric: train/tasks.py


class ConfigError(ValueError):
    """A config value that cannot work, named by its key."""


def make_mesh(c: ml_collections.ConfigDict) -> Mesh:
    """The (data, fsdp, tensor) mesh of `c.mesh.shape` over every process's devices."""
    try:
        return mesh_lib.make_mesh(tuple(c.mesh.shape))
    except ValueError as e:
        raise ConfigError(f"mesh.shape={tuple(c.mesh.shape)}: {e}") from None


def make_sampler_mesh(c: ml_collections.ConfigDict, mesh: Mesh) -> Mesh:
    """The sampler's mesh: `mesh` itself, or `c.mesh.sampler` on a subset or re-layout of its
    devices (mesh.sub_mesh)."""
    if not tuple(c.mesh.sampler):
        return mesh
    try:
        sampler_mesh = mesh_lib.sub_mesh(tuple(c.mesh.sampler), mesh)
    except ValueError as e:
        raise ConfigError(f"mesh.sampler={tuple(c.mesh.sampler)}: {e}") from None
    if jax.process_count() > 1 and sampler_mesh.devices.size < mesh.devices.size:
        # jax.device_put reshards across hosts only between shardings of one device set.
        raise ConfigError(
            f"mesh.sampler={tuple(c.mesh.sampler)} takes {sampler_mesh.devices.size} of the "
            f"{mesh.devices.size} devices; with {jax.process_count()} processes the sampler "
            "must use all of them (another layout, e.g. a data mesh without fsdp)"
        )
    return sampler_mesh


def validate(c: ml_collections.ConfigDict, rl: rl_config.RLConfig, processes: int = 1) -> None:
    P, G = c.train.prompts_per_step, rl.group_size
    B = P * G
    if P % processes or c.eval.num_prompts % processes:
        raise ConfigError(
            f"train.prompts_per_step={P} and eval.num_prompts={c.eval.num_prompts} must be "
            f"divisible by the {processes} processes (each samples its own share)"
        )
    if (B // processes) % rl.num_updates:
        raise ConfigError(
            f"each of the {processes} processes holds {B // processes} rows, which do not split "
            f"into rl.num_updates={rl.num_updates} mini-batches"
        )
    if G < 2:
        raise ConfigError(f"rl.group_size={G}: GRPO needs at least 2 samples per prompt")
    if B % rl.num_updates:
        raise ConfigError(
            f"batch of train.prompts_per_step x rl.group_size = {P} x {G} = {B} rows is not "
            f"divisible by rl.num_updates={rl.num_updates}"
        )
    if (B // rl.num_updates) % c.train.micro_batches:
        raise ConfigError(
            f"mini-batch of {B // rl.num_updates} rows is not divisible by "
            f"train.micro_batches={c.train.micro_batches}"
        )
    if (B // rl.num_updates) % c.train.ref_micro_batches:
        raise ConfigError(
            f"mini-batch of {B // rl.num_updates} rows is not divisible by "
            f"train.ref_micro_batches={c.train.ref_micro_batches}"
        )
    if c.eval.k < 1 or c.eval.num_prompts < 1:
        raise ConfigError("eval.k and eval.num_prompts must be >= 1")
    if c.data.source not in SOURCES:
        raise ConfigError(f"data.source={c.data.source!r} is not one of {SOURCES}")
    for key in ("slip_frac", "unanswered_frac"):
        if c.warm_start.steps and c.warm_start.get(key, 0.0) and c.data.source != "synthetic":
            raise ConfigError(
                f"warm_start.{key}={c.warm_start[key]} adds noise to synthetic worked solutions; "
                f"data.source={c.data.source!r} has none (set it to 0)"
            )


def load_model(
    c: ml_collections.ConfigDict,
) -> tuple[config_lib.ModelConfig, tokenizer_lib.Tokenizer]:
    """(model config, tokenizer) of an HF folder or a preset; `init_params` makes the weights."""
    dtypes = dict(param_dtype=c.model.param_dtype, compute_dtype=c.model.compute_dtype)
    if c.model.init_from:
        model_cfg = config_lib.read_hf_config(c.model.init_from, **dtypes)
        model_cfg = dataclasses.replace(model_cfg, remat=c.model.remat)
        tok = tokenizer_lib.load_tokenizer(c.model.init_from)
    else:
        model_cfg = config_lib.get_preset(c.model.preset, remat=c.model.remat, **dtypes)
        tok = tokenizer_lib.load_tiny_tokenizer()
    if tok.vocab_size > model_cfg.vocab_size:
        raise ConfigError(
            f"tokenizer has {tok.vocab_size} tokens but model.vocab_size={model_cfg.vocab_size}"
        )
    return model_cfg, tok


def init_params(
    c: ml_collections.ConfigDict,
    model_cfg: config_lib.ModelConfig,
    shardings: params_lib.Params,
) -> params_lib.Params:
    """The initial weights, created in their `shardings`: c.model.init_from's, or a random init."""
    if c.model.init_from:
        return hf.load_params(c.model.init_from, model_cfg, shardings=shardings)
    init = jax.jit(
        lambda seed: params_lib.init_params(model_cfg, jax.random.key(seed)),
        out_shardings=shardings,
    )
    return init(np.uint32(c.seed))


def load_data(
    c: ml_collections.ConfigDict,
) -> tuple[list[data_types.Example], list[data_types.Example]]:
    """(train, held-out eval) examples."""
    d = c.data
    if d.source == "synthetic":
        cfg = synthetic.config_for_level(d.level)
        train = synthetic.make_split(cfg, "train", d.train_size, seed=c.seed)
        test = synthetic.make_split(cfg, "test", d.eval_size, seed=c.seed)
        return train, test
    if not d.train_files or not d.eval_files:
        raise ConfigError(f"data.source={d.source!r} needs data.train_files and data.eval_files")
    train = files_lib.dedupe([ex for f in d.train_files for ex in files_lib.load(d.source, f)])
    test = files_lib.dedupe([ex for f in d.eval_files for ex in files_lib.load(d.source, f)])
    return train, test


def make_score_fn(pool: pool_lib.VerifierPool):
    """texts, examples -> verdicts against each example's reference answer, through worker
    processes; a timeout or crash scores 0."""

    def score(texts: list[str], examples: list[data_types.Example]) -> list[math_lib.MathVerdict]:
        return pool.map(
            math_lib.score_math_item,
            [(t, ex.answer) for t, ex in zip(texts, examples, strict=True)],
            on_timeout=math_lib.timeout_verdict,
            on_error=math_lib.error_verdict,
        )

    return score


def rollout_metrics(stats: dict[str, np.ndarray], G: int) -> dict[str, Any]:
    """Rollout metrics of the per-row `rollout.stats` (gathered over every process)."""
    rewards_B, lengths_B = stats["rewards"], stats["lengths"]
    rewards_PxG = rewards_B.reshape(-1, G)
    return {
        "rollout/reward_mean": float(rewards_B.mean()),
        "rollout/reward_std": float(rewards_B.std()),
        "rollout/acc": float(stats["correct"].mean()),
        "rollout/len_mean": float(lengths_B.mean()),
        "rollout/len_max": float(lengths_B.max()) if len(lengths_B) else 0.0,
        "rollout/truncated_frac": float(1.0 - stats["stopped"].mean()),
        "rollout/frac_zero_std_groups": float((rewards_PxG.std(axis=1) == 0).mean()),
        "rollout/no_answer_frac": float(stats["no_answer"].mean()),
        "rollout/verifier_error_frac": float(stats["verifier_error"].mean()),
        "rollout/prompts": float(len(rewards_B) // G),
    }
