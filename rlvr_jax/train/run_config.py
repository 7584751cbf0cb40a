"""The typed run configuration: one frozen dataclass per section of the experiment config.

`RunConfig` mirrors the experiment ConfigDict one to one: `c.rl` is `RunConfig.rl`, an
`RLConfig`, and so on. Only `rlvr_jax/config.py` converts a ConfigDict into it; everything in the
library below takes these dataclasses. Each section checks its own values when it is built;
`validate` checks what spans sections. Every error names its key and comes before any compile.
"""

# pylint: disable=invalid-name
from __future__ import annotations

import dataclasses
import json
import os
import typing
from collections.abc import Mapping
from typing import Any

from rlvr_jax import sampling
from rlvr_jax.engine import engine as engine_lib
from rlvr_jax.errors import ConfigError
from rlvr_jax.objectives import delta as delta_lib
from rlvr_jax.objectives import distil as distil_lib
from rlvr_jax.objectives import opd as opd_lib
from rlvr_jax.objectives import rl_config
from rlvr_jax.objectives import rlif as rlif_lib
from rlvr_jax.rollout import multi_turn as multi_turn_lib
from rlvr_jax.tasks.config import (
    CodeSection,
    DataConfig,
    EcomSection,
    LongTraceSection,
    RubricSection,
    TaskConfig,
    VerifierConfig,
)
from rlvr_jax.train import checkpoint as ckpt_lib
from rlvr_jax.train import state as state_lib
from rlvr_jax.train import warm_start as warm_lib


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelSection:
    """Which weights: a preset's random init, or a local HF folder (weights + tokenizer)."""

    preset: str = "tiny"  # rlvr_jax.models.config.PRESETS name, used when init_from is empty
    init_from: str = ""
    # A preset's tokenizer folder ("": the embedded tiny tokenizer); the preset's vocabulary takes
    # its size. A checkpoint (init_from) always brings its own.
    tokenizer: str = ""
    param_dtype: str = "float32"
    compute_dtype: str = "float32"
    remat: bool = (
        False  # per-layer rematerialisation (a scan over the layers; docs/long_context.md)
    )
    # Long contexts (docs/long_context.md): the LM head and its log-softmax over this many tokens
    # at a time, recomputed in the backward (0: all at once); attention in blocks of this many
    # queries (0: all at once).
    logits_chunk: int = 0
    attention_chunk: int = 0
    # A preset's RoPE base (0: the preset's own, 1e6 Qwen2-style). A checkpoint keeps its own.
    rope_theta: float = 0.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainConfig:
    steps: int = 30  # RL steps
    prompts_per_step: int = 8  # P
    micro_batches: int = 1  # gradient accumulation per update
    ref_micro_batches: int = 1  # reference / teacher scoring passes


@dataclasses.dataclass(frozen=True, kw_only=True)
class EvalConfig:
    every: int = 10  # RL steps; 0: only at the end
    num_prompts: int = 64  # held-out prompts
    k: int = 4  # samples per prompt


@dataclasses.dataclass(frozen=True, kw_only=True)
class MeshConfig:
    shape: tuple[int, ...] = (-1, 1, 1)  # (data, fsdp, tensor)
    sampler: tuple[int, ...] = ()  # the sampler's own layout; (): the policy's mesh


@dataclasses.dataclass(frozen=True, kw_only=True)
class LogConfig:
    every: int = 1  # print a line every this many steps
    tensorboard: bool = True


@dataclasses.dataclass(frozen=True, kw_only=True)
class SamplingSection:
    """Rollout sampling; the tokenizer adds its stop and pad ids (`sampling_config`)."""

    max_new_tokens: int = 64
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    # "static": one batch decoded until its longest row ends (rlvr_jax/sampling.py);
    # "continuous": decode slots refilled as rows stop, one prefill per prompt (rlvr_jax/engine).
    engine: str = "static"
    slots: int = 64  # continuous: rows decoded together
    decode_chunk: int = 8  # continuous: decode steps between host checks
    prefill_chunk: int = 256  # continuous: prompt tokens per prefill call (a power of two)
    # The sampler's activation dtype ("": the model's own, model.compute_dtype). "bfloat16" samples
    # in bf16 against the trainer's dtype: a sampler/trainer mismatch (docs/mismatch.md).
    compute_dtype: str = ""

    def __post_init__(self):
        if self.engine not in ("static", "continuous"):
            raise ValueError(f"engine={self.engine!r}: one of 'static', 'continuous'")
        if self.compute_dtype not in ("", "float32", "bfloat16"):  # models.config.DTYPES
            raise ValueError(
                f"compute_dtype={self.compute_dtype!r}: one of '', 'float32', 'bfloat16'"
            )


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunConfig:
    """Everything one run reads, section by section."""

    seed: int = 0
    export_hf: bool = False  # write workdir/hf_export at the end
    model: ModelSection = ModelSection()
    data: DataConfig = DataConfig()
    rl: rl_config.RLConfig = rl_config.RLConfig()
    sampling: SamplingSection = SamplingSection()
    opt: state_lib.OptConfig = state_lib.OptConfig()
    train: TrainConfig = TrainConfig()
    warm_start: warm_lib.WarmStartConfig = warm_lib.WarmStartConfig()
    eval: EvalConfig = EvalConfig()
    ckpt: ckpt_lib.CheckpointConfig = ckpt_lib.CheckpointConfig()
    log: LogConfig = LogConfig()
    verifier: VerifierConfig = VerifierConfig()
    mesh: MeshConfig = MeshConfig()
    code: CodeSection = CodeSection()
    rubric: RubricSection = RubricSection()
    ecom: EcomSection = EcomSection()
    longtrace: LongTraceSection = LongTraceSection()
    # Multi-turn tasks' per-episode budgets (rlvr_jax/rollout/multi_turn.py); their episodes run
    # on the engine with sampling.slots / decode_chunk / prefill_chunk.
    multi_turn: multi_turn_lib.MultiTurnConfig = multi_turn_lib.MultiTurnConfig()
    delta: delta_lib.DeltaConfig = delta_lib.DeltaConfig()
    opd: opd_lib.OPDConfig = opd_lib.OPDConfig()
    distil: distil_lib.DistilConfig = distil_lib.DistilConfig()
    rlif: rlif_lib.RLIFConfig = rlif_lib.RLIFConfig()

    @property
    def system(self) -> str | None:
        return self.data.system or None


def task_config(cfg: RunConfig) -> TaskConfig:
    return TaskConfig(
        seed=cfg.seed,
        data=cfg.data,
        verifier=cfg.verifier,
        code=cfg.code,
        rubric=cfg.rubric,
        ecom=cfg.ecom,
        longtrace=cfg.longtrace,
    )


SECTIONS = tuple(
    f.name for f in dataclasses.fields(RunConfig) if dataclasses.is_dataclass(f.default)
)


# Keys that moved, with where they went (an old config names the new key in its error).
_MOVED = {
    ("rlif", "kl_cov"): "KL-Cov is rl.policy_loss='kl_cov' with rl.kl_cov_ratio and "
    "rl.kl_cov_coef (docs/rlif.md)",
    ("rlif", "kl_cov_k_frac"): "KL-Cov is rl.policy_loss='kl_cov' with rl.kl_cov_ratio "
    "(docs/rlif.md)",
    ("rlif", "kl_cov_coef"): "KL-Cov is rl.policy_loss='kl_cov' with rl.kl_cov_coef (docs/rlif.md)",
}


def _tuples(value: Any) -> Any:
    """Lists (JSON, ConfigDict) as tuples, recursively: the dataclasses are hashable."""
    if isinstance(value, list | tuple):
        return tuple(_tuples(v) for v in value)
    return value


def _section(name: str, cls: type, raw: Mapping[str, Any]) -> Any:
    fields = {f.name for f in dataclasses.fields(cls)}
    for key in raw:
        if (name, key) in _MOVED:
            raise ConfigError(f"{name}.{key} is gone: {_MOVED[name, key]}")
        if key not in fields:
            raise ConfigError(f"{name}.{key}: unknown key; {name} has {sorted(fields)}")
    try:
        return cls(**{k: _tuples(v) for k, v in raw.items()})
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{name}: {e}") from None


def from_dict(d: Mapping[str, Any]) -> RunConfig:
    """The RunConfig of a plain nested dict (a ConfigDict's `to_dict()`, or config.json)."""
    hints = typing.get_type_hints(RunConfig, globals())
    values: dict[str, Any] = {}
    for key, raw in d.items():
        if key not in hints:
            raise ConfigError(f"{key}: unknown config section; known: {sorted(hints)}")
        if key in SECTIONS:
            if not isinstance(raw, Mapping):
                raise ConfigError(f"{key} must be a section (a dict), got {raw!r}")
            values[key] = _section(key, hints[key], raw)
        else:
            values[key] = raw
    cfg = RunConfig(**values)
    check_sections(cfg)
    return cfg


def to_dict(cfg: RunConfig) -> dict[str, Any]:
    """The RunConfig as a JSON-ready nested dict; `from_dict` reads it back."""
    return dataclasses.asdict(cfg)


def load(workdir: str) -> RunConfig:
    """The RunConfig a run wrote to `workdir/config.json`."""
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: not a run directory (no config.json)")
    with open(path) as f:
        return from_dict(json.load(f))


def sampling_config(cfg: RunConfig, eos_ids, pad_id: int) -> sampling.SamplingConfig:
    """The sampler's config: the section's values and the tokenizer's stop and pad ids."""
    s = cfg.sampling
    return sampling.SamplingConfig(
        max_new_tokens=s.max_new_tokens,
        temperature=s.temperature,
        top_k=s.top_k,
        top_p=s.top_p,
        eos_ids=tuple(eos_ids),
        pad_id=pad_id,
    )


def engine_config(cfg: RunConfig, force: bool = False) -> engine_lib.EngineConfig | None:
    """The continuous engine's sizes, or None for the static sampler (unless `force`: multi-turn
    tasks always run on the engine)."""
    s = cfg.sampling
    if s.engine == "static" and not force:
        return None
    try:
        return engine_lib.EngineConfig(
            slots=s.slots, decode_chunk=s.decode_chunk, prefill_chunk=s.prefill_chunk
        )
    except ValueError as e:
        raise ConfigError(f"sampling: {e}".replace("EngineConfig.", "")) from None


def validate(cfg: RunConfig, processes: int = 1) -> None:
    """The checks that span sections (each section checked its own values when built)."""
    rl, t = cfg.rl, cfg.train
    P, G = t.prompts_per_step, rl.group_size
    B = P * G
    if P % processes or cfg.eval.num_prompts % processes:
        raise ConfigError(
            f"train.prompts_per_step={P} and eval.num_prompts={cfg.eval.num_prompts} must be "
            f"divisible by the {processes} processes (each samples its own share)"
        )
    if (B // processes) % rl.num_updates:
        raise ConfigError(
            f"each of the {processes} processes holds {B // processes} rows, which do not split "
            f"into rl.num_updates={rl.num_updates} mini-batches"
        )
    if G < 2:
        raise ConfigError(f"rl.group_size={G}: GRPO needs at least 2 samples per prompt")
    if cfg.sampling.engine == "continuous" and processes > 1:
        raise ConfigError(
            "sampling.engine='continuous' schedules its slots from one host: run it in one "
            f"process (this run has {processes}), or use sampling.engine='static'"
        )
    if B % rl.num_updates:
        raise ConfigError(
            f"batch of train.prompts_per_step x rl.group_size = {P} x {G} = {B} rows is not "
            f"divisible by rl.num_updates={rl.num_updates}"
        )
    for key in ("micro_batches", "ref_micro_batches"):
        if (B // rl.num_updates) % getattr(t, key):
            raise ConfigError(
                f"mini-batch of {B // rl.num_updates} rows is not divisible by "
                f"train.{key}={getattr(t, key)}"
            )
    if cfg.eval.k < 1 or cfg.eval.num_prompts < 1:
        raise ConfigError("eval.k and eval.num_prompts must be >= 1")
    if cfg.model.rope_theta < 0 or (cfg.model.rope_theta and cfg.model.init_from):
        raise ConfigError(
            f"model.rope_theta={cfg.model.rope_theta}: a preset's RoPE base must be > 0, and a "
            "checkpoint (model.init_from) keeps its own"
        )
    for key in ("logits_chunk", "attention_chunk"):
        value = getattr(cfg.model, key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"model.{key}={value!r} must be an int >= 0 (0: no chunking)")
    for key in ("slip_frac", "unanswered_frac"):
        value = getattr(cfg.warm_start, key)
        if cfg.warm_start.steps and value and cfg.data.source != "synthetic":
            raise ConfigError(
                f"warm_start.{key}={value} adds noise to synthetic worked solutions; "
                f"data.source={cfg.data.source!r} has none (set it to 0)"
            )


def check_sections(cfg: RunConfig) -> None:
    """The objective combinations that cannot work together (any process count)."""
    rl, opd, distil, rlif = cfg.rl, cfg.opd, cfg.distil, cfg.rlif
    if rlif.enabled and (opd.enabled or distil.enabled):
        raise ConfigError("rlif.enabled with opd/distil: pick one training signal")
    if rlif.enabled and (rl.dynamic_sampling or rl.overlong_penalty):
        raise ConfigError(
            "rlif.enabled with rl.dynamic_sampling or rl.overlong_penalty: both act on the "
            "verifier's reward, which label-free training must not read"
        )
    if cfg.delta.enabled and rl.loss_agg != "token_mean":
        raise ConfigError(
            f"delta.enabled needs rl.loss_agg='token_mean' (docs/delta.md), got {rl.loss_agg!r}"
        )
    if opd.enabled and not opd.teacher:
        raise ConfigError("opd.enabled needs opd.teacher, an HF checkpoint folder")
    if opd.enabled and distil.enabled:
        raise ConfigError("opd.enabled and distil.enabled: pick one teacher objective")
    if distil.enabled and distil.teacher == "model" and not distil.teacher_path:
        raise ConfigError("distil.teacher='model' needs distil.teacher_path")
    if (
        distil.enabled
        and distil.sequence_term
        and (rl.num_updates > 1 or cfg.train.micro_batches > 1)
    ):
        raise ConfigError(
            "distil.sequence_term needs whole groups in one micro-batch: "
            "rl.num_updates=1 and train.micro_batches=1"
        )
