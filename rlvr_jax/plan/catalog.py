"""What the planner knows without being told: accelerator chips and published model shapes.

Chip figures are the vendors' published per-chip numbers (sources next to each entry). Model
shapes are the published HF `config.json` fields, parsed by `models.config.from_hf_config`, so the
planner sees exactly the ModelConfig a real checkpoint would give.
"""

from __future__ import annotations

import dataclasses
import json
import os

from rlvr_jax.models import config as config_lib

GiB = 2**30


@dataclasses.dataclass(frozen=True, kw_only=True)
class Chip:
    """One accelerator chip: memory, peak bf16 matmul rate, and the bandwidths a step uses."""

    name: str
    hbm_bytes: int  # memory the framework can allocate on one chip
    peak_flops: float  # dense bf16 FLOP/s
    hbm_bw: float  # bytes/s
    link_bw: float  # bytes/s per chip, one direction, for collectives over ICI / NVLink
    source: str


CHIPS: dict[str, Chip] = {
    # https://cloud.google.com/tpu/docs/v5e: 197 TFLOPs bf16; 16 GB HBM2 at 819 GBps;
    # bidirectional ICI 400 GBps per chip (4 ports), so 200 GBps each way.
    "tpu-v5e": Chip(
        name="tpu-v5e",
        hbm_bytes=16 * GiB,
        peak_flops=197e12,
        hbm_bw=819e9,
        link_bw=200e9,
        source="cloud.google.com/tpu/docs/v5e",
    ),
    # https://cloud.google.com/tpu/docs/v5p: 459 TFLOPs bf16; 95 GiB HBM2e (user-allocatable; 96
    # physical) at 2765 GBps; bidirectional ICI 1200 GBps per chip, so 600 GBps each way.
    "tpu-v5p": Chip(
        name="tpu-v5p",
        hbm_bytes=95 * GiB,
        peak_flops=459e12,
        hbm_bw=2765e9,
        link_bw=600e9,
        source="cloud.google.com/tpu/docs/v5p",
    ),
    # NVIDIA H100 SXM datasheet: 989 TFLOPS bf16 dense (1979 is with 2:4 sparsity); 80 GB HBM3
    # (nvidia-smi: 81,559 MiB) at 3.35 TB/s; NVLink 4 at 900 GB/s total, so 450 GB/s each way.
    "h100": Chip(
        name="h100",
        hbm_bytes=81559 * 2**20,
        peak_flops=989e12,
        hbm_bw=3.35e12,
        link_bw=450e9,
        source="NVIDIA H100 Tensor Core GPU datasheet (SXM)",
    ),
    # NVIDIA H200 SXM datasheet: 989 TFLOPS bf16 dense; 141 GB HBM3e (nvidia-smi: 143,771 MiB)
    # at 4.8 TB/s; NVLink 4 at 900 GB/s total, so 450 GB/s each way.
    "h200": Chip(
        name="h200",
        hbm_bytes=143771 * 2**20,
        peak_flops=989e12,
        hbm_bw=4.8e12,
        link_bw=450e9,
        source="NVIDIA H200 Tensor Core GPU datasheet (SXM)",
    ),
}

# Published HF config.json fields of the checkpoints the experiment presets train.
HF_CONFIGS: dict[str, dict] = {
    # huggingface.co/Qwen/Qwen2.5-Math-1.5B/blob/main/config.json
    "qwen2p5_math_1p5b": {
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "vocab_size": 151936,
        "hidden_size": 1536,
        "intermediate_size": 8960,
        "num_hidden_layers": 28,
        "num_attention_heads": 12,
        "num_key_value_heads": 2,
        "hidden_act": "silu",
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "tie_word_embeddings": True,
        "use_sliding_window": False,
    },
    # huggingface.co/Qwen/Qwen3-8B-Base/blob/main/config.json
    "qwen3_8b_base": {
        "architectures": ["Qwen3ForCausalLM"],
        "model_type": "qwen3",
        "vocab_size": 151936,
        "hidden_size": 4096,
        "intermediate_size": 12288,
        "num_hidden_layers": 36,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "hidden_act": "silu",
        "attention_bias": False,
        "max_position_embeddings": 32768,
        "rms_norm_eps": 1e-6,
        "rope_theta": 1000000,
        "tie_word_embeddings": False,
        "use_sliding_window": False,
    },
}


def get_chip(name: str) -> Chip:
    if name not in CHIPS:
        raise ValueError(f"unknown chip {name!r}; known: {sorted(CHIPS)}")
    return CHIPS[name]


def get_model(name: str, **overrides) -> config_lib.ModelConfig:
    """A published model shape by name, or a `models.config` preset (tiny, qwen2_3m, ...)."""
    if name in HF_CONFIGS:
        return config_lib.from_hf_config(HF_CONFIGS[name], f"<{name}>", **overrides)
    if name in config_lib.PRESETS:
        return config_lib.get_preset(name, **overrides)
    known = sorted(HF_CONFIGS) + sorted(config_lib.PRESETS)
    raise ValueError(f"unknown model {name!r}; known: {known}")


def read_model(path: str, **overrides) -> config_lib.ModelConfig:
    """A ModelConfig from an HF config.json file (or a folder holding one)."""
    if os.path.isdir(path):
        return config_lib.read_hf_config(path, **overrides)
    with open(path) as f:
        return config_lib.from_hf_config(json.load(f), path, **overrides)
