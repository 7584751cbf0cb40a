"""Which XLA:CPU flags speed up the train step's forward + backward, on this jaxlib.

    python benchmarks/xla_flags.py [--size=30m] [--repeats=3]

For each flag set, a child process (flags are read when the backend starts) builds the same
random Qwen2-shaped weights and a GRPO-sized batch (64 rows x 32 prompt + 128 completion tokens),
on a data mesh of one CPU device per core as the experiments use, and times the jitted value and
gradient of the completion tokens' mean negative log-prob (compiled first, untimed; median of
`--repeats`), then the static sampler on the same prompts (128 new tokens): the flags are
process-wide, so a flag must not slow the sampler down to speed the step up. Prints each flag
set's times and their ratios to the default (lines with `ratio`).
The flags are experimental XLA options of this jaxlib version: a flag this version does not
know makes its child fail, which is reported, not fatal.
"""

# pylint: disable=invalid-name
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

from absl import app, flags

_SIZE = flags.DEFINE_enum("size", "30m", ["3m", "30m"], "Model size.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed gradients per flag set (median).")
_CHILD = flags.DEFINE_string("child", None, "Internal: run one flag set, print JSON.")
_SETS = flags.DEFINE_list(
    "sets", ["default", "ynn_off", "xnn_dot", "onednn_dot"], "Flag sets to time (FLAG_SETS)."
)

PRESET = {"3m": "qwen2_3m", "30m": "qwen2_30m"}
FLAG_SETS = {
    "default": "",
    "ynn_off": "--xla_cpu_experimental_ynn_fusion_type=",
    "ynn_dot": "--xla_cpu_experimental_ynn_fusion_type=dot",
    "xnn_dot": "--xla_cpu_experimental_xnn_fusion_type=dot",
    "xnn_dot_eltwise": "--xla_cpu_experimental_xnn_fusion_type=dot,eltwise",
    "onednn_dot": "--xla_cpu_experimental_onednn_fusion_type=dot",
    "fast_math": "--xla_cpu_enable_fast_math=true",
    "concurrency": "--xla_cpu_enable_concurrency_optimized_scheduler=true",
}
B, TP, TC = 64, 32, 128


def child(size: str, repeats: int) -> dict:
    import jax  # noqa: PLC0415  (after XLA_FLAGS is set)
    import jax.numpy as jnp  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    from rlvr_jax import mesh as mesh_lib  # noqa: PLC0415
    from rlvr_jax import sampling  # noqa: PLC0415
    from rlvr_jax.models import config as config_lib  # noqa: PLC0415
    from rlvr_jax.models import params as params_lib  # noqa: PLC0415
    from rlvr_jax.objectives import forward as forward_lib  # noqa: PLC0415

    cfg = config_lib.get_preset(PRESET[size])
    mesh = mesh_lib.make_mesh((-1, 1, 1))
    param_shd = mesh_lib.param_shardings(mesh, params_lib.param_axes(cfg))
    params = jax.device_put(params_lib.init_params(cfg, jax.random.key(0)), param_shd)
    rs = np.random.RandomState(0)
    rows = mesh_lib.batch_sharding(mesh)
    batch = jax.device_put(
        (
            rs.randint(3, cfg.vocab_size, (B, TP)).astype(np.int32),
            np.ones((B, TP), bool),
            rs.randint(3, cfg.vocab_size, (B, TC)).astype(np.int32),
            np.ones((B, TC), bool),
        ),
        rows,
    )

    def loss(params, *batch):
        logps, _ = forward_lib.completion_logps(params, *batch, model_cfg=cfg)
        return -jnp.mean(logps)

    grad = jax.jit(
        jax.value_and_grad(loss),
        in_shardings=(param_shd, *[rows] * 4),
        out_shardings=(mesh_lib.replicated(mesh), param_shd),
    )
    value, _ = jax.block_until_ready(grad(params, *batch))
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(grad(params, *batch))
        times.append(time.perf_counter() - t)
    # The sampler under the same flags: 64 rows x TC new tokens, EOS suppressed.
    sc = sampling.SamplingConfig(max_new_tokens=TC, temperature=1.0)
    prompts = [list(r) for r in np.asarray(batch[0])]
    sample = lambda seed: jax.block_until_ready(
        sampling.generate(params, prompts, jax.random.key(seed), model_cfg=cfg, cfg=sc, mesh=mesh)
    )
    sample(0)
    sample_times = []
    for r in range(repeats):
        t = time.perf_counter()
        sample(r + 1)
        sample_times.append(time.perf_counter() - t)
    return {
        "median_s": statistics.median(times),
        "sample_s": statistics.median(sample_times),
        "loss": float(value),
    }


def main(argv):
    del argv
    if _CHILD.value is not None:
        print(json.dumps(child(_SIZE.value, _REPEATS.value)))
        return
    print(f"{_SIZE.value}: value and gradient, {B} x ({TP} + {TC}) tokens, data mesh")
    base = None
    for name in _SETS.value:
        flag = FLAG_SETS[name]
        env = dict(os.environ)
        env["XLA_FLAGS"] = (
            f"{flag} --xla_force_host_platform_device_count={os.cpu_count() or 1}".strip()
        )
        cmd = [sys.executable, "-m", "benchmarks.xla_flags", f"--child={name}"]
        cmd += [f"--size={_SIZE.value}", f"--repeats={_REPEATS.value}"]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if proc.returncode:
            tail = proc.stderr.strip().splitlines()[-1:] or ["?"]
            print(f"{name:24s} failed: {tail[0][:160]}")
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        base = base or (r["median_s"], r["sample_s"])
        print(
            f"{name:24s} gradient {r['median_s']:7.2f} s (ratio to default "
            f"{base[0] / r['median_s']:.2f}x), sampling {r['sample_s']:6.2f} s (ratio "
            f"{base[1] / r['sample_s']:.2f}x), loss {r['loss']:.6f}",
            flush=True,
        )


if __name__ == "__main__":
    app.run(main)
