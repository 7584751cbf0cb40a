"""Value tests of the forward pass: causality, padding, KV cache, jit, remat, RoPE frequencies."""

import dataclasses
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import transformers
from transformers import modeling_rope_utils

from rlvr_jax.models import config as config_lib
from rlvr_jax.models import params as params_lib
from rlvr_jax.models import transformer
from rlvr_jax.objectives import policy_loss
from tests import fixtures

# One config that switches on every code path at once (q/k/v biases, q/k norms, llama3 RoPE, GQA,
# untied head), so each test compiles a single small model.
CFG = config_lib.ModelConfig(
    model_type="qwen3",
    vocab_size=fixtures.VOCAB,
    d_model=64,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    head_dim=16,
    mlp_dim=96,
    qkv_bias=True,
    qk_norm=True,
    rope_theta=500000.0,
    rope_scaling=config_lib.RopeScaling(
        rope_type="llama3", factor=8.0, original_max_position_embeddings=16
    ),
)


@functools.cache
def _params() -> params_lib.Params:
    """Random params drawn with numpy (jax.random would compile for seconds on a small CPU)."""
    rng = np.random.default_rng(0)

    def draw(path, x):
        # Norm weights near 1 and biases near 0 but not equal, so a dropped term shows up.
        center = 1.0 if "norm" in jax.tree_util.keystr(path) else 0.0
        return jnp.asarray(center + 0.2 * rng.standard_normal(x.shape), x.dtype)

    return jax.tree_util.tree_map_with_path(draw, params_lib.param_shapes(CFG))


_forward = jax.jit(transformer.forward, static_argnames="cfg")
_decode = jax.jit(transformer.decode_hidden, static_argnames="cfg")


def test_output_shapes_and_dtype():
    tokens, mask, positions = fixtures.padded_batch([7, 4], total=7)
    logits = _forward(_params(), tokens, positions, mask, cfg=CFG)
    chex.assert_shape(logits, (2, 7, CFG.vocab_size))
    chex.assert_type(logits, jnp.float32)
    chex.assert_tree_all_finite(logits)


def test_causality_via_gradients():
    """d(logits at t) / d(embedding of the token at s) is zero exactly when s > t."""
    T = 12
    tokens = np.random.default_rng(0).permutation(CFG.vocab_size)[None, :T].astype(np.int32)
    mask = np.ones((1, T), bool)
    positions = np.arange(T, dtype=np.int32)[None]
    params = _params()

    def logit_sums_T(embed):  # the head is untied, so `embed` only enters through the inputs
        logits = transformer.forward(
            dataclasses.replace(params, embed=embed), tokens, positions, mask, CFG
        )
        return logits[0].sum(-1)

    jac_TxVxD = jax.jit(jax.jacrev(logit_sums_T))(params.embed)
    influence_TxT = np.abs(np.asarray(jac_TxVxD)[:, tokens[0], :]).sum(-1)  # [t, s]
    upper = np.triu(np.ones((T, T), bool), k=1)
    assert np.all(influence_TxT[upper] == 0.0)
    assert np.all(influence_TxT[~upper] > 0.0)


def test_later_tokens_do_not_change_earlier_logits():
    tokens, mask, positions = fixtures.padded_batch([10, 10], total=10)
    tokens[1, 6:] = (tokens[0, 6:] + 1) % CFG.vocab_size
    tokens[1, :6] = tokens[0, :6]
    logits = np.asarray(_forward(_params(), tokens, positions, mask, cfg=CFG))
    np.testing.assert_array_equal(logits[0, :6], logits[1, :6])
    assert np.abs(logits[0, 6:] - logits[1, 6:]).max() > 1e-2


def test_left_padding_does_not_change_logits():
    tokens, mask, positions = fixtures.padded_batch([9, 14, 3], total=14, seed=3)
    batched = np.asarray(_forward(_params(), tokens, positions, mask, cfg=CFG))
    row = tokens[0:1, -9:]
    alone = _forward(
        _params(), row, np.arange(9, dtype=np.int32)[None], np.ones_like(row, bool), cfg=CFG
    )
    diff = np.abs(batched[0, -9:] - np.asarray(alone)[0]).max()
    assert diff <= 1e-5, diff
    assert np.isfinite(batched).all()  # fully padded query rows stay finite


def test_kv_cache_prefill_then_decode_matches_full_forward():
    prompt_len, total = 8, 14
    tokens, prompt_mask, _ = fixtures.padded_batch([8, 5, 2], total=prompt_len, seed=4)
    new = np.random.default_rng(5).integers(0, CFG.vocab_size, (3, total - prompt_len))
    tokens = np.concatenate([tokens, new.astype(np.int32)], axis=1)
    mask = np.concatenate([prompt_mask, np.ones_like(new, bool)], axis=1)
    positions = np.asarray(transformer.positions_from_mask(mask))
    params = _params()
    full = np.asarray(_forward(params, tokens, positions, mask, cfg=CFG))

    cache = transformer.init_cache(CFG, batch=3, length=total)
    cut = lambda x, a, b: x[:, a:b]
    hidden, cache = _decode(
        params,
        *(cut(x, 0, prompt_len) for x in (tokens, positions, mask)),
        CFG,
        cache,
        jnp.int32(0),
    )
    logits = [transformer.lm_logits(params, hidden)]
    for t in range(prompt_len, total):
        step = [cut(x, t, t + 1) for x in (tokens, positions, mask)]
        hidden, cache = _decode(params, *step, CFG, cache, jnp.int32(t))
        logits.append(transformer.lm_logits(params, hidden))
    cached = np.concatenate([np.asarray(x) for x in logits], axis=1)
    diff = np.abs(cached - full)[mask].max()
    assert diff <= 1e-5, diff
    assert np.asarray(cache.mask_BxS).tolist() == mask.tolist()


class JitVariantsTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_forward_same_with_and_without_jit(self):
        tokens, mask, positions = fixtures.padded_batch([6, 3], total=6, seed=6)
        fn = self.variant(functools.partial(transformer.forward, cfg=CFG))
        logits = fn(_params(), tokens, positions, mask)
        reference = _forward(_params(), tokens, positions, mask, cfg=CFG)
        np.testing.assert_allclose(logits, reference, atol=1e-5, rtol=1e-5)


def test_remat_same_values_and_gradients():
    tokens, mask, positions = fixtures.padded_batch([8, 6], total=8, seed=7)

    def loss(params, cfg):
        logits = transformer.forward(params, tokens, positions, mask, cfg)
        logps = policy_loss.token_logps(logits[:, :-1], jnp.asarray(tokens[:, 1:]))
        return -(logps * mask[:, 1:]).sum() / mask[:, 1:].sum()

    grad_fn = jax.jit(jax.value_and_grad(loss), static_argnums=1)
    value, grads = grad_fn(_params(), CFG)
    value_r, grads_r = grad_fn(_params(), dataclasses.replace(CFG, remat=True))
    np.testing.assert_allclose(value_r, value, rtol=1e-6)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-4), grads_r, grads
    )


ROPE_CASES = {
    "llama3_tiny": dict(head_dim=16, rope_parameters=fixtures.LLAMA3_ROPE),
    # Llama-3.1-8B's own values.
    "llama3_8b": dict(
        head_dim=128,
        rope_parameters=dict(fixtures.LLAMA3_ROPE, original_max_position_embeddings=8192),
    ),
    "linear": dict(
        head_dim=32, rope_parameters=dict(rope_type="linear", rope_theta=1e4, factor=4.0)
    ),
}


@pytest.mark.parametrize("name", sorted(ROPE_CASES))
def test_rope_inv_freq_matches_transformers(name):
    case = ROPE_CASES[name]
    hf_config = transformers.LlamaConfig(
        vocab_size=97,
        hidden_size=4 * case["head_dim"],
        num_attention_heads=4,
        head_dim=case["head_dim"],
        rope_parameters=dict(case["rope_parameters"]),
    )
    rope_type = case["rope_parameters"]["rope_type"]
    ref, attention_factor = modeling_rope_utils.ROPE_INIT_FUNCTIONS[rope_type](hf_config, "cpu")
    assert attention_factor == 1.0  # we apply no cos/sin scaling
    ours = transformer.rope_inv_freq(config_lib.from_hf_config(hf_config.to_dict()))
    np.testing.assert_allclose(np.asarray(ours), ref.numpy(), rtol=1e-6)
