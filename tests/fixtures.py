"""Shared test builders: tiny random HF models and checkpoints (offline), and left-padded batches.

Every model here is small enough to build, save and run in well under a second on a laptop CPU.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

FAMILIES = ("qwen2", "qwen3", "llama")
# The GRPO run every loop-level test shrinks the tiny preset to (config key -> value).
SMALL_RUN = {
    "train.steps": 3,
    "rl.group_size": 2,
    "eval.k": 2,
    "sampling.max_new_tokens": 16,
    "ckpt.every": 1,
    "ckpt.async_save": False,
    "data.train_size": 40,
    "data.eval_size": 8,
    "log.tensorboard": False,
    "verifier.workers": 1,
}
VOCAB = 97

_COMMON = dict(
    vocab_size=VOCAB,
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    intermediate_size=96,
)
# Llama-3.1 style scaling; original_max_position_embeddings is small so that the smoothed and the
# scaled frequency bands both occur at head_dim 16.
LLAMA3_ROPE = dict(
    rope_type="llama3",
    rope_theta=500000.0,
    factor=8.0,
    low_freq_factor=1.0,
    high_freq_factor=4.0,
    original_max_position_embeddings=16,
)


def make_hf_config(family: str, *, tie: bool = False, **overrides: Any) -> Any:
    """A tiny `transformers` config of `family` (qwen2, qwen3 or llama)."""
    import transformers

    kw = dict(_COMMON, tie_word_embeddings=tie)
    if family == "qwen2":
        kw.update(overrides)
        return transformers.Qwen2Config(**kw)
    if family == "qwen3":
        kw.update(head_dim=16)
        kw.update(overrides)
        return transformers.Qwen3Config(**kw)
    if family == "llama":
        kw.update(rope_parameters=dict(LLAMA3_ROPE))
        kw.update(overrides)
        return transformers.LlamaConfig(**kw)
    raise ValueError(f"unknown family {family!r}; known: {FAMILIES}")


def make_hf_model(family: str, *, tie: bool = False, seed: int = 0, **overrides: Any) -> Any:
    """A tiny random `transformers` causal LM in float32 eval mode.

    Weights are redrawn as normal(0.3) (norm weights as 1 + normal(0.3)), so the logits are far from
    zero and a layout mistake cannot hide behind the default 0.02 init.
    """
    import torch
    import transformers

    hf_config = make_hf_config(family, tie=tie, **overrides)
    model = transformers.AutoModelForCausalLM.from_config(hf_config, dtype=torch.float32).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():  # tied weights are listed once
            p.normal_(0.0, 0.3, generator=gen)
            if "norm" in name:
                p.add_(1.0)
    return model


def save_hf_model(model: Any, folder: str | os.PathLike, max_shard_size: int | None = None) -> str:
    """`model.save_pretrained` as safetensors, sharded when `max_shard_size` (bytes) is given."""
    kwargs = {} if max_shard_size is None else {"max_shard_size": max_shard_size}
    model.save_pretrained(str(folder), **kwargs)
    return str(folder)


def make_hf_checkpoint(
    tmp_path: str | os.PathLike, family: str, tie: bool = False, sharded: bool = False
) -> str:
    """A tiny HF checkpoint folder under `tmp_path`; sharded ones hold ~10 shards and an index."""
    folder = os.path.join(str(tmp_path), f"{family}_{'tied' if tie else 'untied'}")
    folder += "_sharded" if sharded else ""
    return save_hf_model(make_hf_model(family, tie=tie), folder, 40_000 if sharded else None)


def padded_batch(
    lengths: Sequence[int],
    *,
    total: int | None = None,
    vocab_size: int = VOCAB,
    seed: int = 0,
    pad_id: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random left-padded tokens: (tokens_BxT int32, mask_BxT bool, positions_BxT int32).

    Row b holds `lengths[b]` real tokens at its end; padding has token `pad_id` and position 0, and
    real tokens count positions from 0 (as `transformer.positions_from_mask`).
    """
    total = max(lengths) if total is None else total
    rng = np.random.default_rng(seed)
    tokens_BxT = rng.integers(0, vocab_size, (len(lengths), total)).astype(np.int32)
    mask_BxT = np.arange(total)[None, :] >= (total - np.asarray(lengths))[:, None]
    tokens_BxT = np.where(mask_BxT, tokens_BxT, pad_id).astype(np.int32)
    positions_BxT = np.maximum(np.cumsum(mask_BxT, axis=1) - 1, 0).astype(np.int32)
    return tokens_BxT, mask_BxT, positions_BxT


def sandbox_available() -> bool:
    """Whether the code sandbox's namespaces work here (see sandbox_mark)."""
    from rlvr_jax.rewards import sandbox

    try:
        sandbox.probe_isolation()
        return True
    except sandbox.SandboxUnavailable:
        return False


def sandbox_mark():
    """pytestmark for tests that need the code sandbox's Linux user/mount/PID/network namespaces.

    Probed, not assumed: where the host forbids them the sandbox refuses to run, and these tests
    skip with the probe's reason; RLVR_REQUIRE_SANDBOX=1 turns that skip into a failure.
    """
    import os

    import pytest

    from rlvr_jax.rewards import sandbox

    try:
        sandbox.probe_isolation()
        missing = None
    except sandbox.SandboxUnavailable as e:
        missing = str(e)
    if missing and os.environ.get("RLVR_REQUIRE_SANDBOX") == "1":
        raise RuntimeError(f"RLVR_REQUIRE_SANDBOX=1 but: {missing}")
    return pytest.mark.skipif(missing is not None, reason=f"no namespace isolation: {missing}")
