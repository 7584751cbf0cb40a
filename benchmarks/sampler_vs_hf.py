"""Rollout generation: rlvr_jax's jitted sampler against `transformers.generate` on the same
weights.

    python benchmarks/sampler_vs_hf.py [--sizes=3m,30m] [--repeats=3]
    python benchmarks/sampler_vs_hf.py --workload=rlvr [--sizes=3m,30m] [--repeats=1]

`--workload=rlvr` is the question an RLVR user asks: 64 prompts x G=8 samples with a 512-token
budget, where each row's completion length is drawn from a seeded lognormal (mean ~25% of the
budget, a few rows at the budget), the same lengths enforced on both sides (EOS suppressed; each
row stops at its length: rlvr_jax by a per-row budget, transformers by a per-row stopping
criterion). It prints useful completion tokens/s (the sum of the row lengths over the wall time)
of the continuous-batching engine (rlvr_jax/engine), of the static sampler (which decodes every
row to the longest) and of `transformers.generate` (same: finished rows keep their place in the
batch), and the engine's ratio over transformers per size.

The default (`--workload=fixed`) is the fixed-length table:

Same Qwen2-shaped random weights (built by transformers, saved, and loaded by rlvr_jax's HF loader),
same batch (64 prompts x 32 tokens), 128 new tokens with EOS suppressed, temperature 1.0 with no
top-k / top-p, in one process. Prints new tokens/s of both, their ratio, and the fraction of the
CPU's limit each reaches: measured matmul peak / (2 x params FLOPs per token). Both sides time warm
runs only (rlvr_jax's compile and torch's first call are excluded); the reported figure is the
median of `--repeats`, alternating the two systems so that machine noise hits both alike.

rlvr_jax runs on a data mesh of one CPU device per core (the batch split across them, weights
replicated), as the experiment scripts do on a CPU host; torch uses its intra-op threads over the
same cores. `--single_device` also times rlvr_jax on one device for comparison.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time

import jax
import numpy as np
import torch
import transformers
from absl import app, flags

from benchmarks import hf_models
from benchmarks import peak as peak_lib
from rlvr_jax import mesh as mesh_lib
from rlvr_jax import sampling
from rlvr_jax.models import params as params_lib

_SIZES = flags.DEFINE_list("sizes", ["3m", "30m"], "Model sizes: 3m (qwen2_3m), 30m (qwen2_30m).")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed runs per system (median reported).")
_BATCH = flags.DEFINE_integer("batch", 64, "Prompts per batch.")
_PROMPT_LEN = flags.DEFINE_integer("prompt_len", 32, "Prompt tokens.")
_NEW_TOKENS = flags.DEFINE_integer("new_tokens", 128, "New tokens per prompt (EOS suppressed).")
_SINGLE = flags.DEFINE_bool("single_device", False, "Also time rlvr_jax on one device.")
_WORKLOAD = flags.DEFINE_enum("workload", "fixed", ["fixed", "rlvr"], "What to time (docstring).")
_SLOTS = flags.DEFINE_integer("slots", 128, "rlvr workload: the engine's decode slots.")
_CHUNK = flags.DEFINE_integer("decode_chunk", 8, "rlvr workload: decode steps per host check.")

PRESET = hf_models.PRESET
build_models = hf_models.build_models


def time_hf(model, prompt_BxTp: np.ndarray, new_tokens: int) -> float:
    ids = torch.tensor(prompt_BxTp, dtype=torch.long)
    start = time.perf_counter()
    with torch.no_grad():
        out = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            do_sample=True,
            temperature=1.0,
            top_k=0,
            top_p=1.0,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            eos_token_id=None,
            pad_token_id=0,
        )
    elapsed = time.perf_counter() - start
    assert out.shape[1] == prompt_BxTp.shape[1] + new_tokens, out.shape
    return elapsed


def time_jax(params, cfg, prompt_BxTp: np.ndarray, new_tokens: int, seed: int, mesh=None) -> float:
    sc = sampling.SamplingConfig(max_new_tokens=new_tokens, temperature=1.0, eos_ids=())
    prompts = [list(row) for row in prompt_BxTp]
    start = time.perf_counter()
    out = sampling.generate(params, prompts, jax.random.key(seed), model_cfg=cfg, cfg=sc, mesh=mesh)
    lengths = jax.device_get(out.lengths_B)
    elapsed = time.perf_counter() - start
    assert (lengths == new_tokens).all(), lengths
    return elapsed


LAYOUTS = {"data": (-1, 1, 1), "tensor": (1, 1, -1)}  # mesh shapes over one CPU device per core


def main(argv):
    del argv
    if _WORKLOAD.value == "rlvr":
        from benchmarks import rlvr_workload  # noqa: PLC0415

        return rlvr_workload.main(_SIZES.value, _REPEATS.value, _SLOTS.value, _CHUNK.value)
    mesh_lib.use_cpu_devices()  # one CPU device per core, before jax starts a backend
    peak = peak_lib.matmul_peak_flops()
    print(
        f"jax {jax.__version__} ({jax.default_backend()}), torch {torch.__version__}, "
        f"transformers {transformers.__version__}, {os.cpu_count()} CPUs, "
        f"torch threads {torch.get_num_threads()}, jax devices {jax.device_count()}"
    )
    print(f"matmul peak (2048^3 float32, best of jax/torch): {peak / 1e9:.0f} GFLOP/s")
    B, Tp, Tc = _BATCH.value, _PROMPT_LEN.value, _NEW_TOKENS.value
    rows = []
    for size in _SIZES.value:
        with tempfile.TemporaryDirectory() as folder:
            model, cfg, params = build_models(PRESET[size], folder)
        n_params = cfg.num_params()
        limit = peak / (2 * n_params)  # tokens/s at the matmul peak
        prompt_BxTp = np.random.RandomState(0).randint(3, cfg.vocab_size, (B, Tp))
        placed = {}
        for name, shape in LAYOUTS.items():
            mesh = mesh_lib.make_mesh(shape)
            shardings = mesh_lib.param_shardings(mesh, params_lib.param_axes(cfg))
            placed[name] = (mesh, jax.device_put(params, shardings))
            time_jax(placed[name][1], cfg, prompt_BxTp, Tc, seed=0, mesh=mesh)  # compiles
        if _SINGLE.value:
            placed["one device"] = (None, params)
            time_jax(params, cfg, prompt_BxTp, Tc, seed=0)
        time_hf(model, prompt_BxTp, 4)  # warm-up: torch's first-call costs
        times = {name: [] for name in ["transformers", *placed]}
        for r in range(_REPEATS.value):  # interleaved, so machine noise hits every system alike
            times["transformers"].append(time_hf(model, prompt_BxTp, Tc))
            for name, (mesh, p) in placed.items():
                times[name].append(time_jax(p, cfg, prompt_BxTp, Tc, seed=r + 1, mesh=mesh))
        tps = {name: B * Tc / statistics.median(t) for name, t in times.items()}
        tps_hf = tps.pop("transformers")
        best = max(tps, key=tps.get)
        for name, v in tps.items():
            print(f"{size}: rlvr_jax ({name} mesh) {v:8.0f} tok/s ({v / limit:.0%} of limit)")
        print(f"{size}: transformers {tps_hf:8.0f} tok/s ({tps_hf / limit:.0%} of limit)")
        rows.append((size, n_params, best, tps[best], tps_hf, limit))
    print(
        "\n| model | params | rlvr_jax layout | rlvr_jax tok/s | transformers tok/s | ratio "
        "| rlvr_jax % of limit | transformers % of limit |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for size, n, layout, a, b, limit in rows:
        print(
            f"| {size} | {n / 1e6:.1f}M | {layout} | {a:.0f} | {b:.0f} | {a / b:.2f} "
            f"| {a / limit:.0%} | {b / limit:.0%} |"
        )


if __name__ == "__main__":
    app.run(main)
