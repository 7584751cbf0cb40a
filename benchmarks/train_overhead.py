"""Where the train step's time goes beyond forward + backward: an ablation, one layer at a time.

    python benchmarks/train_overhead.py [--size=30m] [--repeats=3] [--profile_dir=DIR]

On the GRPO benchmark's batch shape (64 rows x 32 prompt + 128 completion tokens, data mesh of one
CPU device per core, params replicated, rows split), times:
1. `bare`: value and gradient of the completion tokens' mean negative log-prob;
2. `loss`: value and gradient of the train step's own loss (`step._loss_fn`: the GRPO policy loss
   with its KL to a reference, entropy, ratio and clip metrics), no optimizer;
3. `adamw`: the step's loss and gradient, then AdamW's update and apply (no gradient norm, no
   non-finite guard), params and optimizer state donated;
4. `step`: the whole jitted train step (adds the gradient norm, the non-finite guard, the
   metrics).
Each line prints the time and its ratio to `bare`. With `--profile_dir`, one `step` call runs
under `jax.profiler.trace` (open it with TensorBoard's profile plugin or Perfetto).
"""

# pylint: disable=invalid-name
from __future__ import annotations

import functools
import statistics
import time

from absl import app, flags

from rlvr_jax import mesh as mesh_lib

_SIZE = flags.DEFINE_enum("size", "30m", ["3m", "30m"], "Model size.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed calls per variant (median).")
_PROFILE = flags.DEFINE_string("profile_dir", None, "Write a jax.profiler trace of one step.")

PRESET = {"3m": "qwen2_3m", "30m": "qwen2_30m"}
B, TP, TC = 64, 32, 128


def main(argv):
    del argv
    mesh_lib.use_cpu_devices()
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415
    import optax  # noqa: PLC0415

    from rlvr_jax.models import config as config_lib  # noqa: PLC0415
    from rlvr_jax.models import params as params_lib  # noqa: PLC0415
    from rlvr_jax.objectives import batch as batch_lib  # noqa: PLC0415
    from rlvr_jax.objectives import forward as forward_lib  # noqa: PLC0415
    from rlvr_jax.objectives import objective as objective_lib  # noqa: PLC0415
    from rlvr_jax.objectives import rl_config  # noqa: PLC0415
    from rlvr_jax.train import state as state_lib  # noqa: PLC0415
    from rlvr_jax.train import step as step_lib  # noqa: PLC0415

    cfg = config_lib.get_preset(PRESET[_SIZE.value])
    mesh = mesh_lib.make_mesh((-1, 1, 1))
    param_shd = mesh_lib.param_shardings(mesh, params_lib.param_axes(cfg))
    rows = mesh_lib.batch_sharding(mesh)
    host = jax.device_get(params_lib.init_params(cfg, jax.random.key(0)))
    params = jax.device_put(host, param_shd)
    rs = np.random.RandomState(0)
    batch = jax.device_put(
        batch_lib.TrainBatch(
            prompt_BxTp=rs.randint(3, cfg.vocab_size, (B, TP)).astype(np.int32),
            prompt_mask_BxTp=np.ones((B, TP), bool),
            completion_BxTc=rs.randint(3, cfg.vocab_size, (B, TC)).astype(np.int32),
            completion_mask_BxTc=np.ones((B, TC), bool),
            old_logps_BxTc=np.full((B, TC), -6.2, np.float32),
            adv_BxTc=rs.randn(B, TC).astype(np.float32),
            ref_logps_BxTc=np.full((B, TC), -6.2, np.float32),
        ),
        rows,
    )
    rl = rl_config.RLConfig(group_size=8, beta=0.04)
    objective = objective_lib.compose(rl)
    optimizer = state_lib.make_optimizer(state_lib.OptConfig(lr=1e-6))
    repl = mesh_lib.replicated(mesh)

    def bare_loss(p, b):
        logps, _ = forward_lib.completion_logps(
            p,
            b.prompt_BxTp,
            b.prompt_mask_BxTp,
            b.completion_BxTc,
            b.completion_mask_BxTc,
            model_cfg=cfg,
        )
        return -jnp.mean(logps)

    bare = jax.jit(jax.value_and_grad(bare_loss), out_shardings=(repl, param_shd))
    totals = (jnp.float32(B * TC), jnp.float32(B * TC))
    loss_fn = functools.partial(
        step_lib._loss_fn,  # noqa: SLF001  (the step's own loss, timed alone)
        totals=totals,
        key=None,
        model_cfg=cfg,
        objective=objective,
        temperature=1.0,
        num_micro=1,
    )
    loss = jax.jit(
        jax.value_and_grad(lambda p, b: loss_fn(p, b), has_aux=True),
        out_shardings=((repl, repl), param_shd),
    )
    state_shd = state_lib.state_shardings(param_shd, optimizer)

    def adamw_fn(p, o, b):
        (_, _), g = jax.value_and_grad(lambda p_: loss_fn(p_, b), has_aux=True)(p)
        updates, o = optimizer.update(g, o, p)
        return optax.apply_updates(p, updates), o

    adamw = jax.jit(
        adamw_fn,
        in_shardings=(param_shd, state_shd.opt_state, rows),
        out_shardings=(param_shd, state_shd.opt_state),
        donate_argnums=(0, 1),
    )
    opt_box = {"p": jax.device_put(host, param_shd)}
    opt_box["o"] = jax.jit(optimizer.init, out_shardings=state_shd.opt_state)(opt_box["p"])

    def run_adamw():
        opt_box["p"], opt_box["o"] = adamw(opt_box["p"], opt_box["o"], batch)
        return opt_box["p"]

    state = state_lib.make_init_state(optimizer, state_shd)(jax.device_put(host, param_shd))
    step = step_lib.make_train_step(
        model_cfg=cfg, objective=objective, optimizer=optimizer, shardings=state_shd
    )
    box = {"state": state}

    def run_step():
        box["state"], m = step(box["state"], batch)
        return m

    variants = {
        "bare": lambda: bare(params, batch),
        "loss": lambda: loss(params, batch),
        "adamw": run_adamw,
        "step": run_step,
    }
    times = {}
    for name, fn in variants.items():
        jax.block_until_ready(fn())  # compiles
        ts = []
        for _ in range(_REPEATS.value):
            t = time.perf_counter()
            jax.block_until_ready(fn())
            ts.append(time.perf_counter() - t)
        times[name] = statistics.median(ts)
    print(f"{_SIZE.value}: {B} x ({TP} + {TC}) tokens, data mesh of {jax.device_count()} devices")
    for name, t in times.items():
        print(f"{_SIZE.value}: {name:5s} {t:7.2f} s  ratio to bare {t / times['bare']:.3f}")
    if _PROFILE.value:
        with jax.profiler.trace(_PROFILE.value):
            jax.block_until_ready(run_step())
        print(f"trace of one step in {_PROFILE.value}")


if __name__ == "__main__":
    app.run(main)
