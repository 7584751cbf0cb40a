"""The benchmarks' models: the same random Qwen2-shaped weights as a transformers model and as
rlvr_jax params (saved by transformers, loaded by rlvr_jax's HF loader)."""

from __future__ import annotations

import torch
import transformers

from rlvr_jax.models import config as config_lib
from rlvr_jax.models import hf

PRESET = {"3m": "qwen2_3m", "30m": "qwen2_30m"}


def build_models(preset: str, folder: str):
    """The same random weights as a transformers model and as rlvr_jax params."""
    cfg = config_lib.get_preset(preset)
    hf_cfg = transformers.Qwen2Config(
        **{
            k: v
            for k, v in config_lib.to_hf_config(cfg).items()
            if k not in ("architectures", "dtype")
        }
    )
    torch.manual_seed(0)
    model = transformers.Qwen2ForCausalLM(hf_cfg).eval()
    model.save_pretrained(folder)
    jax_cfg, params, _ = hf.load_checkpoint(folder)
    return model, jax_cfg, params
