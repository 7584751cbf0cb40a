"""The capacity planner: its memory figures against XLA's compiled buffers, and its real-model
reports."""

import dataclasses
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from rlvr_jax import mesh as mesh_lib
from rlvr_jax.models import config as config_lib
from rlvr_jax.models import params as params_lib
from rlvr_jax.objectives import batch as batch_lib
from rlvr_jax.objectives import forward as forward_lib
from rlvr_jax.objectives import objective as objective_lib
from rlvr_jax.objectives import rl_config
from rlvr_jax.plan import catalog, memory, planner
from rlvr_jax.train import state as state_lib
from rlvr_jax.train import step as step_lib

GiB = 2**30
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OPT = state_lib.make_optimizer(state_lib.OptConfig())
# XLA:CPU expands the optimization barriers jax.checkpoint places before its CSE pass, which then
# merges the recomputation back into the forward pass: remat silently does nothing on CPU. TPU and
# GPU keep the barriers; this option makes the CPU compile behave the same way.
REMAT_AS_ON_ACCELERATORS = {"xla_disable_hlo_passes": "cse_barrier_expander"}


def _abstract_batch(B, Tp, Tc) -> batch_lib.TrainBatch:
    sds = jax.ShapeDtypeStruct
    return batch_lib.TrainBatch(
        prompt_BxTp=sds((B, Tp), jnp.int32),
        prompt_mask_BxTp=sds((B, Tp), bool),
        completion_BxTc=sds((B, Tc), jnp.int32),
        completion_mask_BxTc=sds((B, Tc), bool),
        old_logps_BxTc=sds((B, Tc), jnp.float32),
        adv_BxTc=sds((B, Tc), jnp.float32),
    )


def _compiled_bytes(fn, *args) -> int:
    """Bytes one call of a compiled function holds at once: arguments, outputs (less the donated
    buffers they reuse) and temporaries."""
    m = fn.lower(*args).compile(compiler_options=REMAT_AS_ON_ACCELERATORS).memory_analysis()
    return (
        m.argument_size_in_bytes
        + m.output_size_in_bytes
        - m.alias_size_in_bytes
        + m.temp_size_in_bytes
    )


@pytest.mark.parametrize(
    "preset,overrides,B,Tp,Tc,micro",
    [
        ("tiny", {}, 8, 32, 96, 1),
        ("tiny", {"remat": True}, 16, 64, 192, 2),
        ("qwen2_3m", {"remat": True}, 8, 32, 96, 1),
        ("tiny", {"remat": True, "compute_dtype": "bfloat16"}, 8, 64, 192, 1),
        # Long context: chunked LM head and blocked attention, with and without remat.
        ("tiny", {"remat": True, "logits_chunk": 512, "attention_chunk": 256}, 1, 512, 1536, 1),
        ("tiny", {"logits_chunk": 512, "attention_chunk": 256}, 1, 512, 1536, 1),
    ],
    ids=[
        "tiny",
        "tiny-remat-2micro",
        "qwen2_3m-remat",
        "tiny-remat-bf16",
        "tiny-chunked-remat-2k",
        "tiny-chunked-2k",
    ],
)
def test_train_step_memory_within_15_percent_of_compiled(preset, overrides, B, Tp, Tc, micro):
    cfg = config_lib.get_preset(preset, **overrides)
    p = planner.plan(
        cfg,
        chip="h100",
        mesh_shape=(1, 1, 1),
        rows=B,
        prompt_len=Tp,
        completion_len=Tc,
        micro_batches=micro,
    )
    state = jax.eval_shape(lambda x: state_lib.init_state(x, OPT), params_lib.param_shapes(cfg))
    step = step_lib.make_train_step(
        model_cfg=cfg,
        objective=objective_lib.compose(rl_config.RLConfig(group_size=2)),
        optimizer=OPT,
        num_micro=micro,
    )
    compiled = _compiled_bytes(step, state, _abstract_batch(B, Tp, Tc))
    assert p.train_step_bytes == pytest.approx(compiled, rel=0.15)


def test_reference_scoring_memory_within_15_percent_of_compiled():
    cfg = config_lib.get_preset("tiny")
    B, Tp, Tc = 8, 32, 96
    batch = _abstract_batch(B, Tp, Tc)
    fn = forward_lib.make_logps_fn(model_cfg=cfg)
    args = (batch.prompt_BxTp, batch.prompt_mask_BxTp, batch.completion_BxTc)
    compiled = _compiled_bytes(fn, params_lib.param_shapes(cfg), *args, batch.completion_mask_BxTc)
    ms = (1, 1, 1)
    planned = (
        memory.param_bytes(cfg, ms)
        + memory.batch_bytes(B, Tp, Tc, False)
        + memory.scoring_temp(cfg, ms, B, Tp, Tc)
    )
    assert planned == pytest.approx(compiled, rel=0.15)


def test_sharded_state_bytes_match_the_placed_arrays():
    cfg = config_lib.get_preset("tiny")
    mesh = mesh_lib.make_mesh((2, 2, 2))
    shardings = mesh_lib.param_shardings(mesh, params_lib.param_axes(cfg))
    zeros = lambda s, sharding: jnp.zeros(s.shape, s.dtype, device=sharding)
    params = jax.tree.map(zeros, params_lib.param_shapes(cfg), shardings)
    opt_state = OPT.init(params)  # zeros_like keeps each moment's sharding
    on_device0 = lambda tree: sum(
        x.addressable_shards[0].data.nbytes for x in jax.tree.leaves(tree)
    )
    assert memory.param_bytes(cfg, (2, 2, 2)) == on_device0(params)
    assert memory.optimizer_bytes(cfg, (2, 2, 2)) == on_device0(opt_state)


def _preset_plan(model, chip, mesh_shape, *, prompts, G, Tc, micro, beta, **kw):
    cfg = dataclasses.replace(catalog.get_model(model), compute_dtype="bfloat16", remat=True)
    return planner.plan(
        cfg,
        chip=chip,
        mesh_shape=mesh_shape,
        rows=prompts * G,
        prompt_len=512,
        completion_len=Tc,
        micro_batches=micro,
        reference=beta > 0,
        **kw,
    )


def test_qwen2p5_math_1p5b_on_v5e_8():
    # experiments/configs/grpo_math.py:qwen2p5_math_1p5b: 64 prompts x 8, 1024 tokens, 16 micro.
    kw = dict(prompts=64, G=8, Tc=1024, micro=16, beta=0.04)
    data = _preset_plan("qwen2p5_math_1p5b", "tpu-v5e", (8, 1, 1), **kw)
    # Replicated float32 policy + Adam + reference: 4 bytes x 1.54 B x 4 = 23 GiB per chip.
    assert dict(data.phases[0].memory)["params (policy)"] / GiB == pytest.approx(5.75, rel=0.02)
    assert not data.fits
    # Sharded over fsdp and with the reference scored in 16 calls it fits a 16 GiB chip.
    fsdp = _preset_plan("qwen2p5_math_1p5b", "tpu-v5e", (1, 8, 1), ref_micro_batches=16, **kw)
    assert dict(fsdp.phases[0].memory)["params (policy)"] / GiB == pytest.approx(0.72, rel=0.02)
    assert fsdp.fits and 8 * GiB < fsdp.peak < 16 * GiB
    assert 1 < fsdp.step_seconds < 600


def test_qwen3_8b_on_8_h100():
    # experiments/configs/grpo_math.py:qwen3_8b_base: 128 prompts x 8, 2048 tokens, 64 micro.
    kw = dict(G=8, Tc=2048, micro=64, beta=0.0)
    full = _preset_plan("qwen3_8b_base", "h100", (1, 8, 1), prompts=128, **kw)
    # Sampling all 1024 rows at once needs a 45 GiB KV cache per GPU (36 layers, 8 KV heads,
    # 2560 slots, bf16, 128 rows per GPU): it does not fit an 80 GB H100.
    assert full.peak_phase.name == "sample" and not full.fits
    assert dict(full.phases[0].memory)["KV cache"] / GiB == pytest.approx(45.0, rel=0.02)
    half = _preset_plan("qwen3_8b_base", "h100", (1, 8, 1), prompts=32, **kw)
    assert half.fits and 20 * GiB < half.peak < 80 * GiB
    assert 10 < half.step_seconds < 3600


def test_plan_rejects_batches_that_do_not_split():
    cfg = config_lib.get_preset("tiny")
    with pytest.raises(ValueError, match="micro_batches=3"):
        planner.plan(
            cfg,
            chip="tpu-v5e",
            mesh_shape=(1, 1, 1),
            rows=8,
            prompt_len=16,
            completion_len=16,
            micro_batches=3,
        )
    assert (1, 1, 8) not in planner.mesh_shapes(8, cfg)  # tiny has 2 KV heads
    assert (2, 2, 2) in planner.mesh_shapes(8, cfg)


def test_cli_prints_the_verdict():
    cmd = [
        sys.executable,
        "-m",
        "rlvr_jax.plan",
        "--config=experiments/configs/grpo_math.py:qwen2p5_math_1p5b",
        "--chip=tpu-v5e",
        "--mesh=1,8,1",  # the preset's train.ref_micro_batches=16 is what makes it fit
    ]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert "Memory per device (GiB)" in out.stdout
    assert "FITS: peak" in out.stdout
    assert "Meshes of 8 chips" in out.stdout
