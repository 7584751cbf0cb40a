"""Peak memory of one GRPO train step at long contexts: the direct path against the chunked LM
head, chunked attention and per-layer remat (docs/long_context.md).

Run:    python benchmarks/long_context_memory.py [--preset=tiny] [--lengths=2048,8192,32768]
Prints: per length, XLA's compiled memory (memory_analysis: temporaries + arguments + outputs,
        less the donated state the outputs reuse) of `train.step.make_train_step` for both paths,
        a `ratio` line (new / old at 8K), then compiles and runs one new-path step at the longest
        length on this machine and reports its seconds (~18 min at 32K on 2 shared CPU cores;
        --no-run skips it). The old path is only compiled there: at 32K its attention scores
        alone are 16 GiB per layer per buffer (tiny), beyond this machine.

One row of T tokens (a quarter prompt, the rest completion), f32 params, AdamW, one device.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from rlvr_jax.models import config as config_lib  # noqa: E402
from rlvr_jax.models import params as params_lib  # noqa: E402
from rlvr_jax.objectives import batch as batch_lib  # noqa: E402
from rlvr_jax.objectives import objective as objective_lib  # noqa: E402
from rlvr_jax.objectives import rl_config  # noqa: E402
from rlvr_jax.train import state as state_lib  # noqa: E402
from rlvr_jax.train import step as step_lib  # noqa: E402

MiB = 2**20
OPT = state_lib.make_optimizer(state_lib.OptConfig())
NEW = dict(logits_chunk=1024, attention_chunk=512, remat=True)  # the long-context knobs
OLD = dict(logits_chunk=0, attention_chunk=0, remat=False)


def _batch(B: int, Tp: int, Tc: int, abstract: bool) -> batch_lib.TrainBatch:
    shapes = dict(
        prompt_BxTp=((B, Tp), jnp.int32),
        prompt_mask_BxTp=((B, Tp), bool),
        completion_BxTc=((B, Tc), jnp.int32),
        completion_mask_BxTc=((B, Tc), bool),
        old_logps_BxTc=((B, Tc), jnp.float32),
        adv_BxTc=((B, Tc), jnp.float32),
    )
    if abstract:
        return batch_lib.TrainBatch(**{k: jax.ShapeDtypeStruct(*v) for k, v in shapes.items()})
    rng = np.random.default_rng(0)
    return batch_lib.TrainBatch(
        prompt_BxTp=rng.integers(0, 512, (B, Tp), dtype=np.int32),
        prompt_mask_BxTp=np.ones((B, Tp), bool),
        completion_BxTc=rng.integers(0, 512, (B, Tc), dtype=np.int32),
        completion_mask_BxTc=np.ones((B, Tc), bool),
        old_logps_BxTc=np.full((B, Tc), -6.0, np.float32),
        adv_BxTc=np.ones((B, Tc), np.float32),
    )


def _step(cfg: config_lib.ModelConfig):
    objective = objective_lib.compose(rl_config.RLConfig(group_size=1))
    return step_lib.make_train_step(model_cfg=cfg, objective=objective, optimizer=OPT)


def compiled_peak(cfg: config_lib.ModelConfig, T: int) -> tuple[int, int, float]:
    """(peak bytes, temp bytes, compile seconds) of one train step on one row of T tokens."""
    state = jax.eval_shape(lambda p: state_lib.init_state(p, OPT), params_lib.param_shapes(cfg))
    t = time.perf_counter()
    compiled = _step(cfg).lower(state, _batch(1, T // 4, T - T // 4, True)).compile()
    seconds = time.perf_counter() - t
    m = compiled.memory_analysis()
    peak = (
        m.temp_size_in_bytes
        + m.argument_size_in_bytes
        + m.output_size_in_bytes
        - m.alias_size_in_bytes
    )
    return peak, m.temp_size_in_bytes, seconds


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--lengths", default="2048,8192,32768")
    parser.add_argument("--no-run", action="store_true", help="skip executing the long step")
    args = parser.parse_args()
    base = config_lib.get_preset(args.preset)
    old, new = dataclasses.replace(base, **OLD), dataclasses.replace(base, **NEW)
    lengths = [int(x) for x in args.lengths.split(",")]
    print(f"preset {args.preset}: {base.num_params() / 1e6:.1f} M params, one row, AdamW, f32")
    print(f"old: {OLD}\nnew: {NEW}")
    print(f"{'T':>7} {'old peak MiB':>13} {'old temp':>10} {'new peak MiB':>13} {'new temp':>10}")
    peaks = {}
    for T in lengths:
        o_peak, o_temp, _ = compiled_peak(old, T)
        n_peak, n_temp, _ = compiled_peak(new, T)
        peaks[T] = (o_peak, n_peak)
        print(
            f"{T:>7} {o_peak / MiB:>13.1f} {o_temp / MiB:>10.1f} "
            f"{n_peak / MiB:>13.1f} {n_temp / MiB:>10.1f}",
            flush=True,
        )
    ref = 8192 if 8192 in peaks else lengths[len(lengths) // 2]
    o_peak, n_peak = peaks[ref]
    print(f"ratio new/old peak at T={ref}: {n_peak / o_peak:.3f} (goal <= 0.25)")
    if args.no_run:
        return
    T = max(lengths)
    params = params_lib.init_params(new, jax.random.key(0))
    state = state_lib.init_state(params, OPT)
    batch = _batch(1, T // 4, T - T // 4, False)
    step = _step(new)
    t = time.perf_counter()
    compiled = step.lower(state, batch).compile()
    compile_s = time.perf_counter() - t
    t = time.perf_counter()
    state, metrics = compiled(state, batch)
    jax.block_until_ready(state)
    run_s = time.perf_counter() - t
    print(
        f"new path, T={T}, executed on {jax.devices()[0].platform}: compile {compile_s:.1f} s, "
        f"step {run_s:.1f} s, loss {float(metrics['train/loss']):.4f}, "
        f"skipped {float(metrics['train/skipped']):.0f}"
    )


if __name__ == "__main__":
    main()
