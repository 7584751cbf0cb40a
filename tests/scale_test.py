"""Sharded = one device: the train step and the sampler on 8-device meshes, the KV-cache layout, and
a checkpoint written on one mesh restored onto others, where training continues unchanged."""

import dataclasses

import jax
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

from rlvr_jax import distributed, sampling
from rlvr_jax import mesh as mesh_lib
from rlvr_jax.models import config as config_lib
from rlvr_jax.models import params as params_lib
from rlvr_jax.objectives import batch as batch_lib
from rlvr_jax.objectives import forward as forward_lib
from rlvr_jax.objectives import objective as objective_lib
from rlvr_jax.objectives import rl_config
from rlvr_jax.rollout import single_turn
from rlvr_jax.rollout import types as rollout_types
from rlvr_jax.train import checkpoint as ckpt_lib
from rlvr_jax.train import state as state_lib
from rlvr_jax.train import step as step_lib

CFG = dataclasses.replace(config_lib.get_preset("tiny"), num_layers=2)  # half the compile time
# Dr. GRPO's aggregation: its denominator counts rows, which padding rows must not change.
RL = rl_config.RLConfig(group_size=2, loss_agg="seq_mean_token_sum_norm", norm_len=16)
# Momentum SGD: its state follows the params like Adam's, and its update is linear in the gradient,
# so float-level gradient differences stay float-level (Adam's first step is lr * sign(g), which
# turns them into lr-sized flips wherever g is near zero).
OPT = optax.chain(optax.clip_by_global_norm(1.0), optax.sgd(0.1, momentum=0.9))
B, TP, TC = 8, 16, 16  # 8 rows split evenly over every mesh below
SAMPLE_CFG = sampling.SamplingConfig(
    max_new_tokens=12, temperature=0.0, eos_ids=(1,), decode_segments=1
)
# Prompts of different lengths; 6 of them, so a mesh with 8 batch shards pads to 8 rows.
PROMPTS = [[5, 17, 3, 88, 42, 9, 61, 7, 30, 12, 2], [44, 8, 19], [71, 26, 55, 90, 13], [33]]
PROMPTS = PROMPTS + [[9, 9, 4, 200], [300, 12, 77, 6, 5, 4, 3]]
MESHES = [(8, 1, 1), (2, 4, 1), (2, 2, 2), (1, 4, 2)]


def _batch(seed: int, params) -> batch_lib.TrainBatch:
    """A fixed batch: left-padded prompts, right-padded completions, off-policy old log-probs."""
    rng = np.random.default_rng(seed)
    prompt_mask = np.arange(TP)[None, :] >= rng.integers(0, TP // 2, (B, 1))
    comp_mask = np.arange(TC)[None, :] < rng.integers(1, TC + 1, (B, 1))
    prompt = np.where(prompt_mask, rng.integers(2, CFG.vocab_size, (B, TP)), 0).astype(np.int32)
    comp = np.where(comp_mask, rng.integers(2, CFG.vocab_size, (B, TC)), 0).astype(np.int32)
    logps = forward_lib.make_logps_fn(model_cfg=CFG)(params, prompt, prompt_mask, comp, comp_mask)
    old = np.asarray(logps) + rng.normal(0, 0.05, (B, TC)).astype(np.float32)  # ratios != 1
    adv = np.where(comp_mask, rng.normal(size=(B, 1)), 0.0).astype(np.float32)
    return batch_lib.TrainBatch(
        prompt_BxTp=prompt,
        prompt_mask_BxTp=prompt_mask,
        completion_BxTc=comp,
        completion_mask_BxTc=comp_mask,
        old_logps_BxTc=np.where(comp_mask, old, 0.0).astype(np.float32),
        adv_BxTc=adv,
    )


class Trainer:
    """Params, state and the jitted step on one mesh, built the way train/loop.py builds them."""

    def __init__(self, mesh):
        self.mesh = mesh
        self.param_shd = mesh_lib.param_shardings(mesh, params_lib.param_axes(CFG))
        self.state_shd = state_lib.state_shardings(self.param_shd, OPT)
        self.step = step_lib.make_train_step(
            model_cfg=CFG,
            objective=objective_lib.compose(RL),
            optimizer=OPT,
            num_micro=2,
            shardings=self.state_shd,
        )

    def init(self) -> state_lib.TrainState:
        init = jax.jit(
            lambda seed: params_lib.init_params(CFG, jax.random.key(seed)),
            out_shardings=self.param_shd,
        )
        return state_lib.make_init_state(OPT, self.state_shd)(init(np.uint32(0)))

    def abstract(self) -> state_lib.TrainState:
        shapes = jax.eval_shape(
            lambda p: state_lib.init_state(p, OPT), params_lib.param_shapes(CFG)
        )
        return ckpt_lib.abstract_state(shapes, self.state_shd)

    def train(self, state, batch):
        return self.step(state, jax.device_put(batch, mesh_lib.batch_sharding(self.mesh)))


def _mesh(shape, first=0):
    n = int(np.prod(shape))
    return mesh_lib.make_mesh(shape, devices=jax.devices()[first : first + n])


def _max_diff(a, b) -> float:
    return max(
        float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


@pytest.fixture(scope="module")
def one_device():
    """The reference: the same step and sampler on a one-device mesh."""
    trainer = Trainer(_mesh((1, 1, 1)))
    state = trainer.init()
    params = jax.device_get(state.params)
    batches = [_batch(0, params), _batch(1, params)]
    new_state, metrics = trainer.train(state, batches[0])
    out = single_turn.generate(
        new_state.params, PROMPTS, jax.random.key(0), model_cfg=CFG, sampling_cfg=SAMPLE_CFG
    )
    return trainer, batches, jax.device_get((new_state, metrics)), out


@pytest.mark.parametrize("shape", MESHES)
def test_step_and_sampler_on_mesh_match_one_device(one_device, shape):
    _, batches, (want_state, want_m), want_out = one_device
    trainer = Trainer(_mesh(shape))
    state = trainer.init()
    assert state.params.layers[0].q.sharding.spec == mesh_lib.logical_to_spec(
        P("embed", "heads", "head_dim")
    )
    # The optimizer's state lives where its parameters do.
    trace = state.opt_state[1][0].trace
    assert trace.layers[0].gate.sharding == state.params.layers[0].gate.sharding
    state, m = trainer.train(state, batches[0])
    assert state.step.sharding.spec == P() and m["train/loss"].sharding.spec == P()
    loss_diff = abs(float(m["train/loss"]) - float(want_m["train/loss"]))
    param_diff = _max_diff(state.params, want_state.params)
    opt_diff = _max_diff(state.opt_state, want_state.opt_state)
    print(
        f"{shape}: loss {float(m['train/loss']):.6f} |diff| {loss_diff:.1e}, "
        f"max |param diff| {param_diff:.1e}, max |opt state diff| {opt_diff:.1e}"
    )
    np.testing.assert_allclose(m["train/loss"], want_m["train/loss"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(m["train/grad_norm"], want_m["train/grad_norm"], rtol=1e-4)
    assert param_diff < 1e-5 and opt_diff < 1e-5

    # Greedy samples from the updated params: identical tokens, log-probs to float32 rounding.
    key = distributed.replicated_key(trainer.mesh, 0)
    out = single_turn.generate(
        state.params, PROMPTS, key, model_cfg=CFG, sampling_cfg=SAMPLE_CFG, mesh=trainer.mesh
    )
    np.testing.assert_array_equal(out.tokens_BxTc, want_out.tokens_BxTc)
    np.testing.assert_array_equal(out.lengths_B, want_out.lengths_B)
    np.testing.assert_allclose(out.logps_BxTc, want_out.logps_BxTc, atol=1e-4)


@pytest.mark.parametrize("sampler_shape", [(4, 1, 1), (1, 1, 2), (4, 1, 2)])
def test_sampler_on_a_sub_mesh_matches_one_device(one_device, sampler_shape):
    """Train on FSDP (2, 4, 1); sample on a sub-mesh or another layout after one reshard."""
    _, batches, (want_state, _), want_out = one_device
    trainer = Trainer(_mesh((2, 4, 1)))
    state, _ = trainer.train(trainer.init(), batches[0])
    sampler_mesh = mesh_lib.sub_mesh(sampler_shape, trainer.mesh)
    assert list(sampler_mesh.devices.flat) == jax.devices()[: int(np.prod(sampler_shape))]
    params = jax.device_put(
        state.params, mesh_lib.param_shardings(sampler_mesh, params_lib.param_axes(CFG))
    )
    assert params.layers[0].gate.sharding.mesh.devices.size == int(np.prod(sampler_shape))
    assert _max_diff(params, want_state.params) < 1e-5
    key = distributed.replicated_key(sampler_mesh, 0)
    out = single_turn.generate(
        params, PROMPTS, key, model_cfg=CFG, sampling_cfg=SAMPLE_CFG, mesh=sampler_mesh
    )
    np.testing.assert_array_equal(out.tokens_BxTc, want_out.tokens_BxTc)
    np.testing.assert_allclose(out.logps_BxTc, want_out.logps_BxTc, atol=1e-4)


def test_sub_mesh_rejects_shapes_it_cannot_take():
    mesh = _mesh((2, 2, 1))
    assert mesh_lib.sub_mesh((-1, 1, 1), mesh).devices.size == 4
    with pytest.raises(ValueError, match=r"sub-mesh \(8, 1, 1\) \(8 devices\)"):
        mesh_lib.sub_mesh((8, 1, 1), mesh)


def test_axis_rules_raise_on_collisions():
    with pytest.raises(ValueError, match="both map to mesh axis 'tensor'"):
        mesh_lib.logical_to_spec(P("heads", "mlp"))
    with pytest.raises(ValueError, match=r"list \['embed'\] more than once"):
        mesh_lib.logical_to_spec(P("embed"), (("embed", "fsdp"), ("embed", "tensor")))


def test_kv_cache_is_split_over_batch_and_heads():
    mesh = _mesh((2, 2, 2))
    params = jax.device_put(
        params_lib.init_params(CFG, jax.random.key(0)),
        mesh_lib.param_shardings(mesh, params_lib.param_axes(CFG)),
    )
    prompt, mask = jax.device_put(
        sampling.pad_prompts(PROMPTS[:4] * 2, SAMPLE_CFG), mesh_lib.batch_sharding(mesh)
    )
    cache, _ = sampling._prefill_jit(params, prompt, mask, model_cfg=CFG, Tc=16)  # the sampler's
    k_spec, v_spec, mask_spec = mesh_lib.kv_cache_specs()
    assert cache.k[0].sharding.is_equivalent_to(jax.NamedSharding(mesh, k_spec), 4)
    assert cache.v[-1].sharding.is_equivalent_to(jax.NamedSharding(mesh, v_spec), 4)
    assert cache.mask_BxS.sharding.is_equivalent_to(jax.NamedSharding(mesh, mask_spec), 2)
    assert cache.k[0].addressable_shards[0].data.shape[:2] == (2, CFG.num_kv_heads // 2)


def test_padding_rows_change_nothing(one_device):
    """Empty rows (how the loop fills a batch up to the mesh) leave loss and update unchanged."""
    trainer, batches, (want_state, want_m), _ = one_device
    state, m = trainer.train(trainer.init(), rollout_types.pad_rows(batches[0], B + 8))
    np.testing.assert_allclose(m["train/loss"], want_m["train/loss"], rtol=1e-6)
    assert _max_diff(state.params, want_state.params) < 1e-6


def test_checkpoint_moves_between_meshes(one_device, tmp_path):
    """Saved from (2, 2, 1), restored onto (1, 4, 1) and one device: the next step is the same."""
    ref, batches = one_device[0], one_device[1]
    src = Trainer(_mesh((2, 2, 1)))
    state, _ = src.train(src.init(), batches[0])
    manager = ckpt_lib.make_manager(str(tmp_path), ckpt_lib.CheckpointConfig(async_save=False))
    ckpt_lib.save(manager, 1, state, {"data": {"cursor": 1}})
    manager.wait_until_finished()
    want, want_m = jax.device_get(src.train(state, batches[1]))  # no move

    for dst in (Trainer(_mesh((1, 4, 1), first=4)), ref):
        step, restored, record = ckpt_lib.restore_latest(manager, dst.abstract())
        assert (step, record) == (1, {"data": {"cursor": 1}})
        for got, target in zip(
            jax.tree.leaves(restored), jax.tree.leaves(dst.state_shd), strict=True
        ):
            assert got.sharding == target
        got, got_m = jax.device_get(dst.train(restored, batches[1]))
        diff = _max_diff(got.params, want.params)
        print(f"moved to {dict(dst.mesh.shape)}: max |param diff| after a step {diff:.1e}")
        np.testing.assert_allclose(got_m["train/loss"], want_m["train/loss"], rtol=1e-5)
        assert int(got.step) == 2 and diff < 1e-5


def test_hf_checkpoint_loads_into_its_shardings(tmp_path):
    """An HF folder is placed shard by shard: the same values as an unsharded load."""
    from rlvr_jax.models import hf
    from tests import fixtures

    folder = fixtures.make_hf_checkpoint(tmp_path, "qwen2")
    model_cfg = config_lib.read_hf_config(folder)
    mesh = _mesh((2, 2, 2))
    shardings = mesh_lib.param_shardings(mesh, params_lib.param_axes(model_cfg))
    params = hf.load_params(folder, model_cfg, shardings=shardings)
    assert params.layers[1].q.sharding == shardings.layers[1].q
    assert params.layers[1].q.addressable_shards[0].data.shape[:2] == (
        model_cfg.d_model // 2,
        model_cfg.num_heads // 2,
    )
    assert _max_diff(params, hf.load_params(folder, model_cfg)) == 0
