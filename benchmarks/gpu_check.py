"""The accelerator check: decode, RLVR rollouts and the train step of Qwen2-shaped random models in
bfloat16, as fractions of the chip's limits. One prepared script, meant to finish in < 5 minutes.

    python benchmarks/gpu_check.py [--sizes=0.5b,1.5b] [--hbm_tbps=4.8] [--peak_tflops=989]

Per size (random weights of Qwen2.5-0.5B / 1.5B's shapes, bfloat16 params and compute):
- decode: the static sampler on 64 prompts x 64 tokens, 256 new tokens (EOS suppressed); tokens/s
  and its fraction of the HBM roofline, where one decode step must read every parameter once and
  the live KV cache (mean length over the steps);
- rlvr: the continuous engine on 64 prompts x G=8 with the long-tailed lengths of
  `sampler_vs_hf.py --workload=rlvr` (benchmarks/workloads.py, budget 512), useful tokens/s,
  and the static sampler on the same rows for comparison;
- train: one GRPO train step (forward + backward + AdamW) on 32 rows x (64 + 512) tokens; MFU =
  6 x params x tokens / step time / peak (attention FLOPs left out, so a lower bound).
Defaults are an H200's: 4.8 TB/s HBM, 989 dense bf16 TFLOP/s. `--sizes=tiny` runs anywhere
(a CPU smoke test of the script itself). Every timed figure is the median of warm runs.
"""

# pylint: disable=invalid-name
from __future__ import annotations

import dataclasses
import statistics
import time

import jax
import numpy as np
from absl import app, flags

from benchmarks import workloads
from rlvr_jax import sampling
from rlvr_jax.engine import engine as engine_lib
from rlvr_jax.models import config as config_lib
from rlvr_jax.models import params as params_lib
from rlvr_jax.objectives import objective as objective_lib
from rlvr_jax.objectives import rl_config
from rlvr_jax.objectives.batch import TrainBatch
from rlvr_jax.train import state as state_lib
from rlvr_jax.train import step as step_lib

_SIZES = flags.DEFINE_list("sizes", ["0.5b", "1.5b"], "Model sizes: 0.5b, 1.5b, tiny.")
_HBM = flags.DEFINE_float("hbm_tbps", 4.8, "HBM bandwidth, TB/s.")
_PEAK = flags.DEFINE_float("peak_tflops", 989.0, "Dense bf16 peak, TFLOP/s.")
_REPEATS = flags.DEFINE_integer("repeats", 2, "Timed runs per figure (median).")
_PARTS = flags.DEFINE_list("parts", ["decode", "rlvr", "train"], "What to time.")

QWEN_VOCAB = 151936
SHAPES = {  # vocab, d_model, layers, heads, kv heads, mlp
    "0.5b": (QWEN_VOCAB, 896, 24, 14, 2, 4864),
    "1.5b": (QWEN_VOCAB, 1536, 28, 12, 2, 8960),
    "tiny": (512, 128, 4, 4, 2, 384),
}
B_DECODE, TP, TC = 64, 64, 256
B_TRAIN, TC_TRAIN = 32, 512


def model(size: str) -> config_lib.ModelConfig:
    v, d, n, h, kv, f = SHAPES[size]
    base = config_lib.get_preset("tiny")
    return dataclasses.replace(
        base,
        vocab_size=v,
        d_model=d,
        num_layers=n,
        num_heads=h,
        num_kv_heads=kv,
        head_dim=d // h,
        mlp_dim=f,
        param_dtype="bfloat16",
        compute_dtype="bfloat16",
    )


def _median(fn, repeats: int) -> float:
    fn()  # compiles
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def decode(cfg, params, repeats: int) -> dict:
    rs = np.random.RandomState(0)
    prompts = [list(r) for r in rs.randint(3, cfg.vocab_size, (B_DECODE, TP))]
    sc = sampling.SamplingConfig(max_new_tokens=TC, temperature=1.0)
    run = lambda: jax.block_until_ready(
        sampling.generate(params, prompts, jax.random.key(0), model_cfg=cfg, cfg=sc).lengths_B
    )
    s = _median(run, repeats)
    tps = B_DECODE * TC / s
    p_bytes = 2 * cfg.num_params()
    kv_per_token = 2 * cfg.num_layers * cfg.num_kv_heads * cfg.head_dim * 2  # K and V, bf16
    kv_bytes = B_DECODE * (TP + TC / 2) * kv_per_token  # mean live cache over the steps
    roofline = B_DECODE / ((p_bytes + kv_bytes) / (_HBM.value * 1e12))
    return dict(decode_tps=tps, decode_roofline_frac=tps / roofline)


def rlvr(cfg, params, repeats: int) -> dict:
    lengths = workloads.row_lengths()
    P, G = workloads.P, workloads.G
    rs = np.random.RandomState(1)
    prompts = [list(r) for r in rs.randint(3, cfg.vocab_size, (P, TP))]
    sc = sampling.SamplingConfig(max_new_tokens=workloads.BUDGET, temperature=1.0)
    ecfg = engine_lib.EngineConfig(slots=256, decode_chunk=16)
    cache = {}

    def engine_run():
        _, cache["engine"] = engine_lib.generate(
            params,
            prompts,
            jax.random.key(0),
            G=G,
            model_cfg=cfg,
            cfg=sc,
            engine_cfg=ecfg,
            budgets=lengths,
            engine=cache.get("engine"),
        )

    rows = [p for p in prompts for _ in range(G)]
    static_run = lambda: jax.block_until_ready(
        sampling.generate(params, rows, jax.random.key(0), model_cfg=cfg, cfg=sc).lengths_B
    )
    useful = float(lengths.sum())
    return dict(
        rlvr_engine_tps=useful / _median(engine_run, repeats),
        rlvr_static_tps=useful / _median(static_run, repeats),
    )


def train(cfg, params, repeats: int) -> dict:
    rl = rl_config.RLConfig(group_size=8, beta=0.0)
    optimizer = state_lib.make_optimizer(state_lib.OptConfig(lr=1e-6))
    step = step_lib.make_train_step(
        model_cfg=cfg, objective=objective_lib.compose(rl), optimizer=optimizer
    )
    rs = np.random.RandomState(2)
    B, Tc = B_TRAIN, TC_TRAIN
    batch = TrainBatch(
        prompt_BxTp=rs.randint(3, cfg.vocab_size, (B, TP)).astype(np.int32),
        prompt_mask_BxTp=np.ones((B, TP), bool),
        completion_BxTc=rs.randint(3, cfg.vocab_size, (B, Tc)).astype(np.int32),
        completion_mask_BxTc=np.ones((B, Tc), bool),
        old_logps_BxTc=np.full((B, Tc), -5.0, np.float32),
        adv_BxTc=rs.randn(B, Tc).astype(np.float32),
    )
    state = {"s": state_lib.init_state(params, optimizer=optimizer)}

    def run():
        state["s"], m = step(state["s"], batch)
        jax.block_until_ready(m)

    s = _median(run, repeats)
    flops = 6 * cfg.num_params() * B * (TP + Tc)
    return dict(train_step_s=s, train_mfu=flops / s / (_PEAK.value * 1e12))


def main(argv):
    del argv
    print(f"jax {jax.__version__}, {jax.devices()[0].device_kind} x {jax.device_count()}")
    rows = []
    for size in _SIZES.value:
        cfg = model(size)
        params = params_lib.init_params(cfg, jax.random.key(0))
        r = dict(size=size, params=cfg.num_params())
        for fn in [f for f in (decode, rlvr, train) if f.__name__ in _PARTS.value]:
            t = time.perf_counter()
            r.update(fn(cfg, params, _REPEATS.value))
            print(f"{size}: {fn.__name__} done in {time.perf_counter() - t:.0f} s: {r}", flush=True)
        rows.append(r)
    print(
        "\n| model | params | decode tok/s (batch 64) | % of HBM roofline | RLVR useful tok/s, "
        "engine | static | train step (s) | MFU |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        r = {
            "decode_tps": 0,
            "decode_roofline_frac": 0,
            "rlvr_engine_tps": 0,
            "rlvr_static_tps": 0,
            "train_step_s": 0,
            "train_mfu": 0,
            **r,
        }  # parts not run print as 0
        print(
            f"| {r['size']} | {r['params'] / 1e9:.2f}B | {r['decode_tps']:.0f} "
            f"| {r['decode_roofline_frac']:.0%} | {r['rlvr_engine_tps']:.0f} "
            f"| {r['rlvr_static_tps']:.0f} | {r['train_step_s']:.2f} | {r['train_mfu']:.1%} |"
        )


if __name__ == "__main__":
    app.run(main)
