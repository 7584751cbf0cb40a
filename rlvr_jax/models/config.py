"""ModelConfig: the typed description of one decoder of the family, its presets, and parsing of HF
configs.

One family covers Qwen2/Qwen2.5 (q/k/v biases), Qwen3 (q/k RMSNorm) and Llama-3.x (llama3 RoPE
scaling): GQA, RMSNorm, SwiGLU, RoPE, tied or untied embeddings. Anything an HF config asks for that
this family does not implement raises `UnsupportedConfigError` naming the field, never a silent
approximation.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

MODEL_TYPES = ("qwen2", "qwen3", "llama")
DTYPES = ("float32", "bfloat16")
ROPE_TYPES = ("default", "llama3", "linear")


class UnsupportedConfigError(ValueError):
    """An HF config asks for something this model family does not implement."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class RopeScaling:
    """RoPE frequency scaling (HF `rope_parameters` / `rope_scaling`)."""

    rope_type: str = "default"  # one of ROPE_TYPES
    factor: float = 1.0
    low_freq_factor: float = 1.0  # llama3 only
    high_freq_factor: float = 4.0  # llama3 only
    original_max_position_embeddings: int = 8192  # llama3 only

    def __post_init__(self):
        if self.rope_type not in ROPE_TYPES:
            raise UnsupportedConfigError(f"rope_type={self.rope_type!r} is not one of {ROPE_TYPES}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """Shape and numerics of one decoder. Frozen and hashable: it is a static jit argument."""

    model_type: str = "qwen2"  # one of MODEL_TYPES; chooses the HF export format
    vocab_size: int
    d_model: int  # D
    num_layers: int
    num_heads: int  # H
    num_kv_heads: int  # N (GQA groups: H // N)
    head_dim: int  # K
    mlp_dim: int  # F
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling = RopeScaling()
    qkv_bias: bool = False  # Qwen2
    qk_norm: bool = False  # Qwen3
    tie_embeddings: bool = False
    max_position_embeddings: int = 32768
    param_dtype: str = "float32"  # storage dtype of the params pytree
    compute_dtype: str = "float32"  # activations and matmuls; log-softmax is always float32
    remat: bool = False  # recompute each layer in the backward pass (a scanned jax.checkpoint)
    # Long contexts (docs/long_context.md). Both are static shapes; 0 keeps the direct path.
    logits_chunk: int = 0  # tokens per LM-head chunk for log-probs / entropy; 0 = all at once
    attention_chunk: int = 0  # queries per attention block; 0 = the whole [T, S] score matrix

    def __post_init__(self):
        if self.model_type not in MODEL_TYPES:
            raise UnsupportedConfigError(
                f"model_type={self.model_type!r} is not one of {MODEL_TYPES}"
            )
        for name in ("param_dtype", "compute_dtype"):
            if getattr(self, name) not in DTYPES:
                raise ValueError(
                    f"ModelConfig.{name}={getattr(self, name)!r} is not one of {DTYPES}"
                )
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"ModelConfig.num_heads={self.num_heads} is not a multiple of "
                f"num_kv_heads={self.num_kv_heads}"
            )
        for name in ("logits_chunk", "attention_chunk"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"ModelConfig.{name}={value!r} must be an int >= 0")
        if self.head_dim % 2:
            raise ValueError(f"ModelConfig.head_dim={self.head_dim} must be even for RoPE")

    @property
    def dims(self) -> tuple[int, int, int, int, int, int]:
        """(D, H, N, K, F, V): the dimension legend's sizes, for unpacking in one line."""
        return (
            self.d_model,
            self.num_heads,
            self.num_kv_heads,
            self.head_dim,
            self.mlp_dim,
            self.vocab_size,
        )

    def num_params(self) -> int:
        """Parameter count, embeddings included (tied embeddings counted once)."""
        D, H, N, K, F, _ = self.dims
        attn = (
            D * H * K * 2
            + D * N * K * 2
            + (H * K + 2 * N * K) * self.qkv_bias
            + 2 * K * self.qk_norm
        )
        layer = attn + 3 * D * F + 2 * D
        embed = self.vocab_size * D * (1 if self.tie_embeddings else 2)
        return self.num_layers * layer + embed + D


def _qwen2_shaped(
    vocab_size: int, d: int, layers: int, heads: int, kv: int, mlp: int
) -> ModelConfig:
    return ModelConfig(
        model_type="qwen2",
        vocab_size=vocab_size,
        d_model=d,
        num_layers=layers,
        num_heads=heads,
        num_kv_heads=kv,
        head_dim=d // heads,
        mlp_dim=mlp,
        qkv_bias=True,
        tie_embeddings=True,
        rope_theta=1e6,
    )


TINY_VOCAB = (
    512  # the checked-in tiny tokenizer's vocabulary (rlvr_jax/models/assets/tiny_tokenizer)
)

PRESETS: dict[str, ModelConfig] = {
    # The embedded default: learns the synthetic task on a laptop CPU.
    "tiny": _qwen2_shaped(TINY_VOCAB, 128, 4, 4, 2, 384),
    # Benchmark shapes (Qwen2-shaped, ~3M and ~30M parameters).
    "qwen2_3m": _qwen2_shaped(TINY_VOCAB, 256, 4, 4, 2, 768),
    "qwen2_30m": _qwen2_shaped(TINY_VOCAB, 512, 8, 8, 4, 2048),
}


def get_preset(name: str, **overrides: Any) -> ModelConfig:
    """A named preset, optionally with fields replaced."""
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; known: {sorted(PRESETS)}")
    return dataclasses.replace(PRESETS[name], **overrides)


# --- HF config.json <-> ModelConfig ---

_ARCH_FIELDS = {
    "qwen2": {"Qwen2ForCausalLM"},
    "qwen3": {"Qwen3ForCausalLM"},
    "llama": {"LlamaForCausalLM"},
}


def _rope_from_hf(hf: dict[str, Any], path: str) -> tuple[float, RopeScaling]:
    """Reads RoPE theta and scaling from a v5 `rope_parameters` or a v4
    `rope_theta`/`rope_scaling`."""
    params = hf.get("rope_parameters")
    if params is None:
        params = dict(hf.get("rope_scaling") or {})
        params.setdefault("rope_theta", hf.get("rope_theta", 10000.0))
    params = dict(params)
    rope_type = params.pop("rope_type", params.pop("type", "default")) or "default"
    theta = float(params.pop("rope_theta", hf.get("rope_theta", 10000.0)))
    if rope_type not in ROPE_TYPES:
        raise UnsupportedConfigError(
            f"{path}: field rope_parameters.rope_type={rope_type!r} is not "
            f"supported (supported: {ROPE_TYPES})"
        )
    known = {"factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"}
    if rope_type == "default":
        params.pop("factor", None)
        known = set()
    unknown = sorted(k for k, v in params.items() if k not in known and v is not None)
    if unknown:
        raise UnsupportedConfigError(
            f"{path}: field rope_parameters.{unknown[0]} is not supported "
            f"for rope_type={rope_type!r}"
        )
    return theta, RopeScaling(
        rope_type=rope_type, **{k: v for k, v in params.items() if k in known}
    )


def from_hf_config(hf: dict[str, Any], path: str = "config.json", **overrides: Any) -> ModelConfig:
    """Builds a ModelConfig from a parsed HF config.json; raises naming the field on anything
    unsupported."""
    model_type = hf.get("model_type")
    if model_type not in MODEL_TYPES:
        raise UnsupportedConfigError(
            f"{path}: field model_type={model_type!r} is not supported (supported: {MODEL_TYPES})"
        )
    archs = hf.get("architectures") or []
    for arch in archs:
        if arch not in _ARCH_FIELDS[model_type]:
            raise UnsupportedConfigError(
                f"{path}: field architectures={archs!r} is not supported for "
                f"model_type={model_type!r}"
            )
    if hf.get("hidden_act", "silu") != "silu":
        raise UnsupportedConfigError(
            f"{path}: field hidden_act={hf['hidden_act']!r} is not supported (only 'silu')"
        )
    if hf.get("use_sliding_window"):
        raise UnsupportedConfigError(f"{path}: field use_sliding_window=true is not supported")
    if hf.get("mlp_bias"):
        raise UnsupportedConfigError(f"{path}: field mlp_bias=true is not supported")
    if hf.get("partial_rotary_factor", 1.0) != 1.0:
        raise UnsupportedConfigError(
            f"{path}: field partial_rotary_factor={hf['partial_rotary_factor']} is not supported"
        )
    layer_types = set(hf.get("layer_types") or ()) - {"full_attention"}
    if layer_types:
        raise UnsupportedConfigError(
            f"{path}: field layer_types contains {sorted(layer_types)}; only full_attention is "
            "supported"
        )
    if hf.get("pretraining_tp", 1) != 1:
        raise UnsupportedConfigError(
            f"{path}: field pretraining_tp={hf['pretraining_tp']} is not supported"
        )
    for key in (
        "vocab_size",
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "intermediate_size",
    ):
        if key not in hf:
            raise UnsupportedConfigError(f"{path}: required field {key} is missing")
    heads = hf["num_attention_heads"]
    theta, scaling = _rope_from_hf(hf, path)
    if model_type == "qwen2":
        qkv_bias = True
    else:
        qkv_bias = bool(hf.get("attention_bias", False))
    kwargs = dict(
        model_type=model_type,
        vocab_size=hf["vocab_size"],
        d_model=hf["hidden_size"],
        num_layers=hf["num_hidden_layers"],
        num_heads=heads,
        num_kv_heads=hf.get("num_key_value_heads") or heads,
        head_dim=hf.get("head_dim") or hf["hidden_size"] // heads,
        mlp_dim=hf["intermediate_size"],
        rms_norm_eps=hf.get("rms_norm_eps", 1e-6),
        rope_theta=theta,
        rope_scaling=scaling,
        qkv_bias=qkv_bias,
        qk_norm=model_type == "qwen3",
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        max_position_embeddings=hf.get("max_position_embeddings", 32768),
    )
    # The checkpoint's own `dtype` is deliberately not adopted: params default to float32 (master
    # weights for training); pass param_dtype="bfloat16" to keep a bf16 checkpoint in bf16.
    kwargs.update(overrides)
    return ModelConfig(**kwargs)


def to_hf_config(cfg: ModelConfig, **extra: Any) -> dict[str, Any]:
    """The HF config.json dict (v5 layout, `rope_parameters`) that transformers loads for `cfg`."""
    arch = next(iter(_ARCH_FIELDS[cfg.model_type]))
    rope: dict[str, Any] = {"rope_type": cfg.rope_scaling.rope_type, "rope_theta": cfg.rope_theta}
    if cfg.rope_scaling.rope_type != "default":
        rope["factor"] = cfg.rope_scaling.factor
    if cfg.rope_scaling.rope_type == "llama3":
        rope.update(
            low_freq_factor=cfg.rope_scaling.low_freq_factor,
            high_freq_factor=cfg.rope_scaling.high_freq_factor,
            original_max_position_embeddings=cfg.rope_scaling.original_max_position_embeddings,
        )
    hf = {
        "architectures": [arch],
        "model_type": cfg.model_type,
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.d_model,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.num_kv_heads,
        "head_dim": cfg.head_dim,
        "intermediate_size": cfg.mlp_dim,
        "hidden_act": "silu",
        "rms_norm_eps": cfg.rms_norm_eps,
        "rope_parameters": rope,
        "tie_word_embeddings": cfg.tie_embeddings,
        "max_position_embeddings": cfg.max_position_embeddings,
        "dtype": cfg.param_dtype,
    }
    if cfg.model_type != "qwen2":
        hf["attention_bias"] = cfg.qkv_bias
    if cfg.model_type == "llama":
        hf["mlp_bias"] = False
    hf.update(extra)
    return hf


def read_hf_config(folder: str, **overrides: Any) -> ModelConfig:
    """Reads `folder/config.json` into a ModelConfig."""
    path = os.path.join(folder, "config.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no config.json in checkpoint folder {folder!r}")
    with open(path) as f:
        try:
            hf = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{e.lineno}: invalid JSON: {e.msg}") from None
    return from_hf_config(hf, path, **overrides)
