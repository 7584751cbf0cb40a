"""Sampler against references: transformers' greedy `generate`, and a full forward pass (no cache).

The forward pass gives each completion token's logits, so the returned log-probs, the top-k support
and the sampling distribution are all checked against it.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from rlvr_jax import sampling
from rlvr_jax.models import hf, transformer
from tests import fixtures

# Same prompts as sampling_test.py, so both files share the compiled sampler programs.
PROMPTS = [[5, 17, 3, 88, 42, 9, 61, 7, 30, 12, 2], [44, 8, 19], [71, 26, 55, 90, 13, 4, 66], [33]]
BASE = sampling.SamplingConfig(max_new_tokens=32, temperature=1.0)
_forward = jax.jit(transformer.forward, static_argnums=4)


def _load(hf_model, folder):
    model_cfg, params, _ = hf.load_checkpoint(fixtures.save_hf_model(hf_model, folder))
    return model_cfg, params


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return _load(fixtures.make_hf_model("qwen2"), tmp_path_factory.mktemp("qwen2"))


def _generate(model, cfg, key=0, prompts=PROMPTS) -> sampling.SampleOutput:
    model_cfg, params = model
    out = sampling.generate(params, prompts, jax.random.key(key), model_cfg=model_cfg, cfg=cfg)
    return jax.device_get(out)


def _completion_logits(model, out) -> np.ndarray:
    """Float32 logits [B, Tc, V] that predict each completion token, from one uncached forward."""
    model_cfg, params = model
    tokens_BxT = jnp.concatenate([out.prompt_BxTp, out.tokens_BxTc], axis=1)
    mask_BxT = jnp.concatenate([out.prompt_mask_BxTp, out.mask_BxTc], axis=1)
    positions_BxT = transformer.positions_from_mask(mask_BxT)
    logits_BxTxV = _forward(params, tokens_BxT, positions_BxT, mask_BxT, model_cfg)
    Tp = out.prompt_BxTp.shape[1]
    return np.asarray(logits_BxTxV[:, Tp - 1 : -1])


def _take(x_BxTxV, tokens_BxT) -> np.ndarray:
    return np.take_along_axis(x_BxTxV, tokens_BxT[..., None], axis=-1)[..., 0]


@pytest.mark.parametrize("family", fixtures.FAMILIES)
def test_greedy_matches_transformers_generate(tmp_path, family):
    hf_model = fixtures.make_hf_model(family)
    model = _load(hf_model, tmp_path)
    out = _generate(model, dataclasses.replace(BASE, temperature=0.0))
    # transformers also left-pads a batch of different lengths; pad id 0 under a zero mask.
    Tp = max(len(p) for p in PROMPTS)
    input_ids = torch.zeros((len(PROMPTS), Tp), dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    for b, p in enumerate(PROMPTS):
        input_ids[b, Tp - len(p) :] = torch.tensor(p)
        attention_mask[b, Tp - len(p) :] = 1
    with torch.no_grad():
        ref = hf_model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            do_sample=False,
            max_new_tokens=32,
            min_new_tokens=32,
            pad_token_id=0,
            eos_token_id=None,
        )
    ref_BxTc = ref[:, Tp:].numpy()
    assert ref_BxTc.shape == (4, 32)
    rows_equal = (out.tokens_BxTc == ref_BxTc).all(axis=1)
    print(f"{family}: rows equal to transformers {rows_equal.tolist()}")
    np.testing.assert_array_equal(out.tokens_BxTc, ref_BxTc)
    assert len(np.unique(ref_BxTc)) > 10  # a varied continuation, not one repeated token


@pytest.mark.parametrize("temperature", [0.0, 1.0, 0.7])
def test_logps_equal_full_forward(model, temperature):
    out = _generate(model, dataclasses.replace(BASE, temperature=temperature), key=1)
    logits_BxTcxV = _completion_logits(model, out)
    # The tempered policy, untruncated: greedy reports temperature-1 log-probs.
    ref_BxTcxV = jax.nn.log_softmax(logits_BxTcxV / (temperature or 1.0), axis=-1)
    ref_BxTc = _take(np.asarray(ref_BxTcxV), out.tokens_BxTc)
    diff = np.abs(out.logps_BxTc - ref_BxTc)[out.mask_BxTc].max()
    print(
        f"T={temperature}: max |logp - forward logp| = {diff:.2e} over {out.mask_BxTc.sum()} "
        f"tokens (mean logp {out.logps_BxTc.mean():.2f})"
    )
    assert out.mask_BxTc.all() and diff <= 1e-4
    if temperature == 0.0:
        np.testing.assert_array_equal(out.tokens_BxTc, logits_BxTcxV.argmax(-1))


def test_top_k_samples_stay_in_top_k(model):
    out = _generate(model, dataclasses.replace(BASE, temperature=2.0, top_k=5), key=4)
    logits_BxTcxV = _completion_logits(model, out)
    # Rank 0 is the argmax; ties between float32 logits of a random model do not occur.
    rank_BxTc = (logits_BxTcxV > _take(logits_BxTcxV, out.tokens_BxTc)[..., None]).sum(-1)
    counts = np.bincount(rank_BxTc[out.mask_BxTc], minlength=5)
    print(f"top_k=5, T=2: sampled-token ranks 0..{len(counts) - 1}: {counts.tolist()}")
    assert len(counts) == 5 and counts[1:].sum() > 0
    # Reported log-probs are the tempered policy's before truncation.
    ref_BxTc = _take(np.asarray(jax.nn.log_softmax(logits_BxTcxV / 2.0, axis=-1)), out.tokens_BxTc)
    np.testing.assert_allclose(out.logps_BxTc, ref_BxTc, atol=1e-4, rtol=0)


def test_one_token_frequencies_match_softmax(model):
    n = 4000
    cfg = dataclasses.replace(BASE, max_new_tokens=1, completion_buckets=(1,))
    out = _generate(model, cfg, key=5, prompts=[PROMPTS[0]] * n)
    first = jax.tree.map(lambda x: x[:1], out)
    probs_V = np.asarray(jax.nn.softmax(_completion_logits(model, first)[0, 0]))
    freqs_V = np.bincount(out.tokens_BxTc[:, 0], minlength=probs_V.size) / n
    tv = 0.5 * np.abs(freqs_V - probs_V).sum()
    print(f"{n} rows: total variation {tv:.4f}, top probability {probs_V.max():.3f}")
    assert tv < 0.05
    np.testing.assert_allclose(
        out.logps_BxTc[:, 0], np.log(probs_V[out.tokens_BxTc[:, 0]]), atol=1e-4, rtol=0
    )


@pytest.mark.parametrize("shape", [(4, 1, 1), (1, 1, 2), (2, 2, 2)])
def test_sharded_sampling_matches_one_device(model, shape):
    """Data-, tensor- and fsdp-sharded sampling give the same samples as one device."""
    from rlvr_jax import mesh as mesh_lib
    from rlvr_jax.models import params as params_lib

    model_cfg, params = model
    n = int(np.prod(shape))
    mesh = mesh_lib.make_mesh(shape, devices=jax.devices()[:n])
    shardings = mesh_lib.param_shardings(mesh, params_lib.param_axes(model_cfg))
    params_sharded = jax.device_put(params, shardings)
    prompts = PROMPTS * 2  # 8 rows
    for cfg in (dataclasses.replace(BASE, temperature=0.0), BASE):
        one = sampling.generate(params, prompts, jax.random.key(3), model_cfg=model_cfg, cfg=cfg)
        out = sampling.generate(
            params_sharded, prompts, jax.random.key(3), model_cfg=model_cfg, cfg=cfg, mesh=mesh
        )
        np.testing.assert_array_equal(np.asarray(out.tokens_BxTc), np.asarray(one.tokens_BxTc))
        np.testing.assert_allclose(
            np.asarray(out.logps_BxTc), np.asarray(one.logps_BxTc), atol=1e-4
        )
    if mesh_lib.batch_size_of(mesh) > 1:
        with pytest.raises(ValueError, match="does not split over"):
            sampling.generate(
                params_sharded,
                PROMPTS[:3],
                jax.random.key(3),
                model_cfg=model_cfg,
                cfg=BASE,
                mesh=mesh,
            )


def test_decode_segments_do_not_change_samples(model):
    """Attending to segment-sized cache prefixes gives the same tokens as the whole cache."""
    model_cfg, params = model
    outs = [
        _generate(model, dataclasses.replace(BASE, max_new_tokens=40, decode_segments=n), key=5)
        for n in (1, 3)
    ]
    np.testing.assert_array_equal(outs[0].tokens_BxTc, outs[1].tokens_BxTc)
    np.testing.assert_allclose(outs[0].logps_BxTc, outs[1].logps_BxTc, atol=1e-5)
    assert sampling.segment_ends(64, 3) == (16, 32, 64)
    assert sampling.segment_ends(128, 4) == (16, 32, 64, 128)
    assert sampling.segment_ends(2, 4) == (1, 2)
