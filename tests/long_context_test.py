"""Long contexts that fit: the chunked LM head and chunked attention equal the direct paths (values
and gradients), and per-layer remat shrinks the compiled temporaries on CPU."""

import dataclasses
import functools
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rlvr_jax.models import config as config_lib
from rlvr_jax.models import params as params_lib
from rlvr_jax.models import transformer
from rlvr_jax.objectives import batch as batch_lib
from rlvr_jax.objectives import distil, rl_config
from rlvr_jax.objectives import forward as forward_lib
from rlvr_jax.objectives import objective as objective_lib
from rlvr_jax.train import state as state_lib
from rlvr_jax.train import step as step_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CFG = dataclasses.replace(config_lib.get_preset("tiny"), num_layers=2, vocab_size=64)
# Chunks that do not divide the shapes, so the padding of the last chunk is exercised too.
CHUNKED = dataclasses.replace(CFG, logits_chunk=7, attention_chunk=5, remat=True)
RL = rl_config.RLConfig(group_size=2)
TOL = dict(rtol=1e-5, atol=1e-5)


def _assert_grads_close(got, want):
    """Each gradient leaf within 1e-5 of the direct one, relative to that leaf's largest entry:
    a different float32 summation order (blocks, chunks, a scan) moves entries of a leaf that
    reaches ~1e3 by ~1e-4, as plain remat without any chunking does too."""
    for a, c in zip(jax.tree.leaves(want), jax.tree.leaves(got), strict=True):
        scale = max(1.0, float(jnp.max(jnp.abs(a))))
        np.testing.assert_allclose(c, a, rtol=0, atol=1e-5 * scale)


def _batch(params, B=4, Tp=8, Tc=11, seed=0, K=0) -> batch_lib.TrainBatch:
    rng = np.random.default_rng(seed)
    prompt_mask = np.ones((B, Tp), bool)
    prompt_mask[1, :3] = False  # left padding
    comp_mask = np.ones((B, Tc), bool)
    comp_mask[2, 5:] = False  # right padding
    comp_mask[3, 2:] = False
    prompt = rng.integers(0, CFG.vocab_size, (B, Tp), dtype=np.int32)
    comp = rng.integers(0, CFG.vocab_size, (B, Tc), dtype=np.int32)
    logps = forward_lib.make_logps_fn(model_cfg=CFG)(params, prompt, prompt_mask, comp, comp_mask)
    adv = np.where(comp_mask, rng.normal(size=(B, 1)), 0.0).astype(np.float32)
    extra = {}
    if K:
        ids = np.stack([rng.permutation(CFG.vocab_size)[:K] for _ in range(B * Tc)])
        probs = rng.dirichlet(np.ones(K), size=B * Tc).astype(np.float32)
        extra = dict(
            teacher_ids_BxTcxK=ids.reshape(B, Tc, K).astype(np.int32),
            teacher_probs_BxTcxK=probs.reshape(B, Tc, K),
        )
    return batch_lib.TrainBatch(
        prompt_BxTp=prompt,
        prompt_mask_BxTp=prompt_mask,
        completion_BxTc=comp,
        completion_mask_BxTc=comp_mask,
        old_logps_BxTc=np.asarray(logps) - 0.05,  # off-policy: ratios != 1, clipping active
        adv_BxTc=adv,
        **extra,
    )


@pytest.fixture(scope="module")
def params():
    return params_lib.init_params(CFG, jax.random.key(0))


def _rows(b):
    return (b.prompt_BxTp, b.prompt_mask_BxTp, b.completion_BxTc, b.completion_mask_BxTc)


def test_chunked_head_equals_direct_values_and_grads(params):
    b = _batch(params, K=3)
    mask = b.completion_mask_BxTc

    def run(cfg):
        def f(p):
            fwd = forward_lib.completion_forward(
                p, *_rows(b), model_cfg=cfg, temperature=0.7, gather_ids_BxTcxK=b.teacher_ids_BxTcxK
            )
            scalar = jnp.sum(jnp.where(mask, fwd.logps_BxTc + 0.3 * fwd.entropy_BxTc, 0.0))
            scalar += jnp.sum(jnp.where(mask[..., None], fwd.gathered_logps_BxTcxK, 0.0))
            return scalar, fwd

        (_, fwd), g = jax.jit(jax.value_and_grad(f, has_aux=True))(params)
        return fwd, g

    direct, g_direct = run(CFG)
    chunked, g_chunked = run(CHUNKED)
    assert direct.logits_BxTcxV is not None and chunked.logits_BxTcxV is None
    for name in ("logps_BxTc", "entropy_BxTc", "gathered_logps_BxTcxK", "hidden_BxTcxD"):
        np.testing.assert_allclose(getattr(chunked, name), getattr(direct, name), **TOL)
    for a, c in zip(jax.tree.leaves(g_direct), jax.tree.leaves(g_chunked), strict=True):
        np.testing.assert_allclose(c, a, **TOL)


def test_train_step_chunked_equals_direct(params, micro=2):
    """GRPO + DistIL (the student's log-probs at the teacher top-k) through the whole step, over
    two micro-batches."""
    b = _batch(params, seed=1, K=3)
    objective = objective_lib.compose(RL, distil=distil.DistilConfig(enabled=True, grpo_coef=1.0))
    sgd = optax.sgd(1.0)  # the update is exactly -grads: compares the gradients
    outs = []
    for cfg in (CFG, CHUNKED):
        step = step_lib.make_train_step(
            model_cfg=cfg, objective=objective, optimizer=sgd, num_micro=micro, temperature=0.9
        )
        p = jax.tree.map(lambda x: jnp.array(x, copy=True), params)
        outs.append(step(state_lib.init_state(p, sgd), b))
    (s0, m0), (s1, m1) = outs
    assert set(m0) == set(m1)
    for k in m0:
        np.testing.assert_allclose(m1[k], m0[k], err_msg=k, **TOL)
    for a, c in zip(jax.tree.leaves(s0.params), jax.tree.leaves(s1.params), strict=True):
        np.testing.assert_allclose(c, a, **TOL)


def test_chunked_attention_equals_direct(params):
    B, T = 3, 23
    rng = np.random.default_rng(2)
    tokens = rng.integers(0, CFG.vocab_size, (B, T), dtype=np.int32)
    mask = np.ones((B, T), bool)
    mask[0, :4] = False  # left padding
    mask[2, 19:] = False  # right padding
    pos = transformer.positions_from_mask(mask)

    def hidden(cfg):
        f = lambda p: transformer.decode_hidden(p, tokens, pos, mask, cfg)[0]
        out, vjp = jax.vjp(f, params)
        return out, vjp(jnp.ones_like(out))[0]

    out0, g0 = jax.jit(hidden, static_argnums=0)(CFG)
    out1, g1 = jax.jit(hidden, static_argnums=0)(dataclasses.replace(CFG, attention_chunk=4))
    np.testing.assert_allclose(out1, out0, **TOL)
    _assert_grads_close(g1, g0)


def test_chunked_attention_over_a_cache(params):
    """The sampler's prefill and a decode step attend over a KV cache: blocked queries give the
    same hidden states and cache."""
    B, Tp, S = 2, 13, 20
    rng = np.random.default_rng(3)
    tokens = rng.integers(0, CFG.vocab_size, (B, Tp), dtype=np.int32)
    mask = np.ones((B, Tp), bool)
    mask[1, :5] = False
    pos = transformer.positions_from_mask(mask)
    outs = []

    @functools.partial(jax.jit, static_argnums=0)
    def prefill_and_step(cfg):
        cache = transformer.init_cache(cfg, B, S)
        h, cache = transformer.decode_hidden(params, tokens, pos, mask, cfg, cache, 0)
        step = jnp.full((B, 1), 5, jnp.int32)
        h1, cache = transformer.decode_hidden(
            params, step, pos[:, -1:] + 1, jnp.ones((B, 1), bool), cfg, cache, Tp
        )
        return h, h1, cache

    for cfg in (CFG, dataclasses.replace(CFG, attention_chunk=4)):
        outs.append(prefill_and_step(cfg))
    for a, c in zip(jax.tree.leaves(outs[0]), jax.tree.leaves(outs[1]), strict=True):
        np.testing.assert_allclose(c, a, **TOL)


def test_scorers_use_the_chunked_head(params):
    """Reference log-probs and the teacher's top-k from the chunked head equal the direct ones,
    and the chunked scorer's compiled program holds no [B, Tc, V] float32 buffer."""
    b = _batch(params, B=4, Tp=8, Tc=11)
    for kw in (dict(), dict(num_micro=2)):
        ref0 = forward_lib.make_logps_fn(model_cfg=CFG, **kw)(params, *_rows(b))
        ref1 = forward_lib.make_logps_fn(model_cfg=CHUNKED, **kw)(params, *_rows(b))
        np.testing.assert_allclose(ref1, ref0, **TOL)
    ids0, probs0 = distil.make_topk_fn(CFG, 0.8, 5, None)(params, *_rows(b))
    ids1, probs1 = distil.make_topk_fn(CHUNKED, 0.8, 5, None)(params, *_rows(b))
    np.testing.assert_array_equal(ids1, ids0)
    np.testing.assert_allclose(probs1, probs0, **TOL)
    hlo = forward_lib.make_logps_fn(model_cfg=CHUNKED).lower(params, *_rows(b)).as_text()
    assert f"4x11x{CFG.vocab_size}xf32" not in hlo
    assert f"7x{CFG.vocab_size}xf32" in hlo  # one chunk's logits


_REMAT_PROBE = """
import jax, jax.numpy as jnp
from rlvr_jax.models import config as config_lib, params as params_lib, transformer
temps = []
for remat in (False, True):
    cfg = config_lib.get_preset("tiny", num_layers=4, remat=remat)
    def loss(p, tok):
        mask = jnp.ones(tok.shape, bool)
        h, _ = transformer.decode_hidden(p, tok, transformer.positions_from_mask(mask), mask, cfg)
        return jnp.sum(jnp.square(h))
    tok = jax.ShapeDtypeStruct((1, 512), jnp.int32)
    c = jax.jit(jax.grad(loss)).lower(params_lib.param_shapes(cfg), tok).compile()
    temps.append(c.memory_analysis().temp_size_in_bytes)
print(*temps)
"""


@pytest.mark.parametrize("flags", ["", "--xla_disable_hlo_passes=cse_barrier_expander"])
def test_remat_shrinks_compiled_temporaries_on_cpu(flags):
    """On XLA:CPU as it is (no flags) and emulating accelerators (barriers kept through CSE)."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=flags)
    out = subprocess.run(
        [sys.executable, "-c", _REMAT_PROBE],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    without, with_remat = map(int, out.stdout.split())
    assert with_remat < 0.5 * without, (with_remat, without)


def test_run_config_keys_reach_the_model_config_and_bad_values_name_the_key():
    from rlvr_jax.errors import ConfigError  # noqa: PLC0415
    from rlvr_jax.train import run_config, setup  # noqa: PLC0415

    cfg = run_config.from_dict(
        {"model": {"logits_chunk": 256, "attention_chunk": 128, "remat": True}}
    )
    model_cfg, _ = setup.load_model(cfg)
    assert (model_cfg.logits_chunk, model_cfg.attention_chunk, model_cfg.remat) == (256, 128, True)
    bad = run_config.from_dict({"model": {"attention_chunk": -1}})
    with pytest.raises(ConfigError, match="model.attention_chunk=-1"):
        run_config.validate(bad)
