"""`sampler_vs_hf.py --workload=rlvr`: useful completion tokens/s on a long-tailed RLVR batch.

64 prompts x G=8 rows, a 512-token budget, row lengths from a seeded lognormal (mean ~128 tokens,
about 3% of rows clipped at the budget), EOS suppressed and each row stopped at its length on
every side. Systems, same weights, one process, run alternately:
- rlvr_jax's engine (continuous batching, one prefill per prompt) on a data mesh of one CPU
  device per core and on one device;
- rlvr_jax's static sampler (every row decodes to the longest: the budget);
- `transformers.generate` on the whole batch with a per-row stopping criterion (finished rows
  keep their place in the batch, as in TRL's rollouts).
Warm runs only: each system runs once untimed first (XLA compiles; torch's first-call costs).
"""

# pylint: disable=invalid-name
from __future__ import annotations

import statistics
import tempfile
import time

import jax
import numpy as np
import torch
import transformers

from benchmarks import hf_models, workloads
from rlvr_jax import mesh as mesh_lib
from rlvr_jax import sampling
from rlvr_jax.engine import engine as engine_lib
from rlvr_jax.models import params as params_lib

P, G, BUDGET, PROMPT_LEN = workloads.P, workloads.G, workloads.BUDGET, workloads.PROMPT_LEN
row_lengths = workloads.row_lengths
GOAL = {"3m": 3.0, "30m": 2.5}


class _RowLengths(transformers.StoppingCriteria):
    """Stops row i once it has `lengths[i]` new tokens (a per-row boolean, as HF expects)."""

    def __init__(self, start: int, lengths: np.ndarray):
        self.start, self.lengths = start, torch.tensor(lengths)

    def __call__(self, input_ids, scores, **kwargs):
        del scores, kwargs
        return (input_ids.shape[1] - self.start) >= self.lengths


def time_hf(model, prompt_RxTp: np.ndarray, lengths: np.ndarray) -> float:
    ids = torch.tensor(prompt_RxTp, dtype=torch.long)
    start = time.perf_counter()
    with torch.no_grad():
        out = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            do_sample=True,
            temperature=1.0,
            top_k=0,
            top_p=1.0,
            max_new_tokens=int(lengths.max()),
            stopping_criteria=transformers.StoppingCriteriaList(
                [_RowLengths(ids.shape[1], lengths)]
            ),
            eos_token_id=None,
            pad_token_id=0,
        )
    elapsed = time.perf_counter() - start
    assert out.shape[1] == ids.shape[1] + lengths.max(), out.shape
    return elapsed


def time_engine(params, cfg, prompts, lengths, seed, ecfg, mesh, engine):
    sc = sampling.SamplingConfig(max_new_tokens=BUDGET, temperature=1.0, eos_ids=())
    start = time.perf_counter()
    out, engine = engine_lib.generate(
        params,
        prompts,
        jax.random.key(seed),
        G=G,
        model_cfg=cfg,
        cfg=sc,
        engine_cfg=ecfg,
        budgets=lengths,
        engine=engine,
        mesh=mesh,
    )
    elapsed = time.perf_counter() - start
    np.testing.assert_array_equal(out.lengths_B, lengths)
    return elapsed, engine


def time_static(params, cfg, prompts, seed, mesh) -> float:
    sc = sampling.SamplingConfig(max_new_tokens=BUDGET, temperature=1.0, eos_ids=())
    rows = [p for p in prompts for _ in range(G)]
    start = time.perf_counter()
    out = sampling.generate(params, rows, jax.random.key(seed), model_cfg=cfg, cfg=sc, mesh=mesh)
    jax.block_until_ready(out.lengths_B)
    return time.perf_counter() - start


def main(sizes, repeats: int, slots: int, decode_chunk: int):
    mesh_lib.use_cpu_devices()  # one CPU device per core, before jax starts a backend
    lengths = row_lengths()
    useful = int(lengths.sum())
    print(
        f"jax {jax.__version__}, torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"jax devices {jax.device_count()}; {P} prompts x G={G}, budget {BUDGET}, lengths mean "
        f"{lengths.mean():.0f} median {np.median(lengths):.0f} max {lengths.max()}, "
        f"{(lengths == BUDGET).sum()} rows at the budget, {useful} useful tokens"
    )
    ecfg = engine_lib.EngineConfig(slots=slots, decode_chunk=decode_chunk)
    rows = []
    for size in sizes:
        with tempfile.TemporaryDirectory() as folder:
            model, cfg, params = hf_models.build_models(hf_models.PRESET[size], folder)
        rs = np.random.RandomState(0)
        prompts = [list(r) for r in rs.randint(3, cfg.vocab_size, (P, PROMPT_LEN))]
        prompt_RxTp = np.repeat(np.asarray(prompts), G, axis=0)
        mesh = mesh_lib.make_mesh((-1, 1, 1))
        placed = jax.device_put(params, mesh_lib.param_shardings(mesh, params_lib.param_axes(cfg)))
        layouts = {"engine, data mesh": (placed, mesh), "engine, one device": (params, None)}
        engines = {}
        for name, (p, m) in layouts.items():  # warm-up: compiles every shape the runs use
            _, engines[name] = time_engine(p, cfg, prompts, lengths, 0, ecfg, m, None)
        time_static(placed, cfg, prompts, 0, mesh)
        time_hf(model, prompt_RxTp[:8], np.full(8, 4))
        times = {name: [] for name in ["transformers", "static sampler", *layouts]}
        for r in range(repeats):  # alternating, so machine noise hits every system alike
            times["transformers"].append(time_hf(model, prompt_RxTp, lengths))
            for name, (p, m) in layouts.items():
                dt, engines[name] = time_engine(
                    p, cfg, prompts, lengths, r + 1, ecfg, m, engines[name]
                )
                times[name].append(dt)
            times["static sampler"].append(time_static(placed, cfg, prompts, r + 1, mesh))
        tps = {name: useful / statistics.median(t) for name, t in times.items()}
        for name, v in tps.items():
            print(
                f"{size}: {name:20s} {v:8.0f} useful tok/s ({statistics.median(times[name]):.1f} s)"
            )
        best = max(layouts, key=tps.get)
        ratio = tps[best] / tps["transformers"]
        met = "met" if ratio >= GOAL[size] else "NOT met"
        print(
            f"{size}: ratio rlvr_jax ({best})/transformers {ratio:.2f} (goal >= {GOAL[size]}: "
            f"{met}); engine/static {tps[best] / tps['static sampler']:.2f}",
            flush=True,
        )
        rows.append((size, cfg.num_params(), best, tps, ratio))
    print(
        "\n| model | params | engine (layout) tok/s | static sampler tok/s | transformers tok/s "
        "| ratio engine/transformers | goal |"
    )
    print("|---|---|---|---|---|---|---|")
    for size, n, best, tps, ratio in rows:
        print(
            f"| {size} | {n / 1e6:.1f}M | {tps[best]:.0f} ({best.split(', ')[1]}) "
            f"| {tps['static sampler']:.0f} | {tps['transformers']:.0f} | {ratio:.2f} "
            f"| >= {GOAL[size]} |"
        )
