"""Capacity planner command line: per-device memory and step time of an experiment config.

    python -m rlvr_jax.plan --config=experiments/configs/grpo_math.py:qwen2p5_math_1p5b \
        --chip=tpu-v5e --mesh=1,8,1

Like an experiment main, this reads the experiment's config (batch, lengths, dtypes, remat, beta)
through rlvr_jax/config.py and hands typed values to `planner.plan`. The model shape comes from
--model_config (an HF config.json), --model (a name in plan/catalog.py or models/config.py), the
config's model.init_from folder, the config's preset name, or model.preset, in that order.
"""

from __future__ import annotations

import dataclasses
import os

from absl import app, flags

from rlvr_jax import config as experiment
from rlvr_jax import sampling
from rlvr_jax.models import config as config_lib
from rlvr_jax.plan import catalog, planner, report

_CONFIG = experiment.define_config_flag("experiments/configs/grpo_math.py")
_MESH = flags.DEFINE_string(
    "mesh", None, "Mesh shape data,fsdp,tensor (default: the config's mesh.shape)."
)
_DEVICES = flags.DEFINE_integer("devices", 8, "Chips in the slice; resolves a -1 in the mesh.")
_CHIP = flags.DEFINE_enum("chip", "tpu-v5e", sorted(catalog.CHIPS), "Accelerator chip.")
_MODEL = flags.DEFINE_string("model", None, "Model shape name (catalog or models.config preset).")
_MODEL_CONFIG = flags.DEFINE_string("model_config", None, "HF config.json (file or folder).")
_PROMPT_LEN = flags.DEFINE_integer("prompt_len", 512, "Prompt tokens (rounded up to a bucket).")
_REF_CALLS = flags.DEFINE_integer(
    "ref_micro_batches",
    None,
    "Calls that score the reference log-probs (default rl.num_updates x train.ref_micro_batches, "
    "as train/loop.py scores them).",
)
_MFU = flags.DEFINE_float("mfu", 0.4, "Fraction of peak FLOP/s reached by matmul phases.")
_USABLE = flags.DEFINE_float("usable_frac", 0.9, "Fraction of HBM the run may use.")
_SWEEP = flags.DEFINE_bool("sweep", True, "Also tabulate every mesh shape of the same size.")


def _config_preset(filename: str) -> str:
    """The preset named after `file.py:` (bare or as preset=...)."""
    arg = filename.partition(":")[2]
    for part in arg.split(","):
        if "=" not in part or part.startswith("preset="):
            return part.removeprefix("preset=")
    return ""


def resolve_model(c, config_filename: str = "") -> tuple[str, config_lib.ModelConfig]:
    """(name, ModelConfig) for the experiment config, with its dtypes, remat and chunks applied."""
    init_from = c.model.init_from
    preset = _config_preset(config_filename)
    if _MODEL_CONFIG.value:
        name, cfg = _MODEL_CONFIG.value, catalog.read_model(_MODEL_CONFIG.value)
    elif _MODEL.value:
        name, cfg = _MODEL.value, catalog.get_model(_MODEL.value)
    elif init_from and os.path.isfile(os.path.join(init_from, "config.json")):
        name, cfg = init_from, catalog.read_model(init_from)
    elif preset in catalog.HF_CONFIGS:
        name, cfg = preset, catalog.get_model(preset)
    elif c.model.preset:
        name, cfg = c.model.preset, catalog.get_model(c.model.preset)
    else:
        raise app.UsageError("no model shape: pass --model=NAME or --model_config=config.json")
    cfg = dataclasses.replace(
        cfg,
        param_dtype=c.model.param_dtype,
        compute_dtype=c.model.compute_dtype,
        remat=c.model.remat,
        logits_chunk=c.model.logits_chunk,
        attention_chunk=c.model.attention_chunk,
    )
    return name, cfg


def _mesh_shape(c) -> tuple[int, int, int]:
    """--mesh, else the config's mesh.shape; a -1 takes the rest of --devices."""
    if _MESH.value:
        shape = [int(x) for x in _MESH.value.split(",")]
    else:
        shape = list(c.mesh.shape)
    if len(shape) != 3 or shape.count(-1) > 1:
        raise app.UsageError(f"mesh {shape} must be data,fsdp,tensor with at most one -1")
    if -1 in shape:
        known = -shape[0] * shape[1] * shape[2]
        if _DEVICES.value % known:
            raise app.UsageError(f"mesh {shape} does not divide --devices={_DEVICES.value}")
        shape[shape.index(-1)] = _DEVICES.value // known
    return tuple(shape)


def main(argv):
    del argv
    c, filename = experiment.from_flag(_CONFIG)
    name, cfg = resolve_model(c, filename)
    mesh_shape = _mesh_shape(c)
    buckets = sampling.DEFAULT_BUCKETS
    kwargs = dict(
        chip=_CHIP.value,
        rows=c.train.prompts_per_step * c.rl.group_size,
        prompt_len=sampling.bucket(_PROMPT_LEN.value, buckets, "--prompt_len"),
        completion_len=sampling.bucket(c.sampling.max_new_tokens, buckets, "max_new_tokens"),
        micro_batches=c.train.micro_batches,
        num_updates=c.rl.num_updates,
        reference=c.rl.beta > 0,
        ref_micro_batches=_REF_CALLS.value or c.rl.num_updates * c.train.ref_micro_batches,
        mfu=_MFU.value,
        usable_frac=_USABLE.value,
    )
    p = planner.plan(cfg, mesh_shape=mesh_shape, **kwargs)
    print(report.format_plan(p, name))
    if c.rl.dynamic_sampling and c.rl.max_resample_rounds:
        rounds = 1 + c.rl.max_resample_rounds
        print(f"Note: dynamic sampling may run up to {rounds} sampling rounds per step.")
    if _SWEEP.value:
        n = mesh_shape[0] * mesh_shape[1] * mesh_shape[2]
        plans = []
        for shape in planner.mesh_shapes(n, cfg):
            try:
                plans.append(planner.plan(cfg, mesh_shape=shape, **kwargs))
            except ValueError:
                continue
        print()
        print(report.format_sweep(plans))


if __name__ == "__main__":
    app.run(main)
