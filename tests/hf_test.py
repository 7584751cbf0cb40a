"""HF interop: logits parity with transformers, save/load round trips, and one-line load errors."""

import functools
import json
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
import torch
import transformers

from rlvr_jax.models import config as config_lib
from rlvr_jax.models import hf, transformer
from tests import fixtures

CASES = [(family, tie) for family in fixtures.FAMILIES for tie in (False, True)]
_forward = jax.jit(transformer.forward, static_argnums=4)


@functools.cache
def _model(family: str, tie: bool):
    return fixtures.make_hf_model(family, tie=tie)


def _batch():
    return fixtures.padded_batch([24, 17, 9], total=24, seed=1)


def _hf_logits(model, tokens, mask, positions) -> np.ndarray:
    as_long = lambda x: torch.from_numpy(np.asarray(x, np.int64))
    with torch.no_grad():
        out = model(
            input_ids=as_long(tokens), attention_mask=as_long(mask), position_ids=as_long(positions)
        )
    return out.logits.float().numpy()


def _max_diff(a, b, mask) -> float:
    return float(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32))[mask].max())


@pytest.mark.parametrize("family,tie", CASES)
def test_logits_match_transformers(tmp_path, family, tie):
    model = _model(family, tie)
    cfg, params, _ = hf.load_checkpoint(fixtures.save_hf_model(model, tmp_path))
    assert cfg.model_type == family and cfg.tie_embeddings == tie
    assert (params.lm_head is None) == tie
    tokens, mask, positions = _batch()
    ref = _hf_logits(model, tokens, mask, positions)
    diff = _max_diff(_forward(params, tokens, positions, mask, cfg), ref, mask)
    print(
        f"{family} tie={tie}: max |logit diff| = {diff:.2e} (max |logit| {np.abs(ref).max():.1f})"
    )
    assert diff <= 1e-4


def test_sharded_checkpoint_loads_same_params(tmp_path):
    folder = fixtures.make_hf_checkpoint(tmp_path, "qwen2", sharded=True)
    index = json.load(open(os.path.join(folder, hf.INDEX_FILE)))
    assert len(set(index["weight_map"].values())) > 2
    assert not os.path.exists(os.path.join(folder, hf.SINGLE_FILE))
    _, sharded, _ = hf.load_checkpoint(folder)
    _, single, _ = hf.load_checkpoint(fixtures.make_hf_checkpoint(tmp_path, "qwen2"))
    jax.tree.map(np.testing.assert_array_equal, sharded, single)


@pytest.mark.parametrize("family,tie", CASES)
def test_save_round_trip_through_transformers(tmp_path, family, tie):
    model = _model(family, tie)
    cfg, params, _ = hf.load_checkpoint(fixtures.save_hf_model(model, tmp_path / "in"))
    shard = 30_000 if family == "llama" else None  # one family exercises the sharded export
    hf.save_checkpoint(str(tmp_path / "out"), cfg, params, max_shard_bytes=shard)
    assert os.path.exists(tmp_path / "out" / hf.INDEX_FILE) == (shard is not None)
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path / "out", dtype=torch.float32
    ).eval()
    assert type(reloaded) is type(model)
    tokens, mask, positions = _batch()
    diff = _max_diff(
        _hf_logits(reloaded, tokens, mask, positions),
        _hf_logits(model, tokens, mask, positions),
        mask,
    )
    assert diff <= 1e-5, diff
    # Our own reader gets the very same arrays back.
    _, again, _ = hf.load_checkpoint(str(tmp_path / "out"))
    jax.tree.map(np.testing.assert_array_equal, again, params)


def test_bfloat16_load_and_export(tmp_path):
    model = _model("qwen3", False)
    folder = fixtures.save_hf_model(model, tmp_path / "in")
    cfg32, params32, _ = hf.load_checkpoint(folder)
    cfg16, params16, _ = hf.load_checkpoint(
        folder, param_dtype="bfloat16", compute_dtype="bfloat16"
    )
    assert {x.dtype for x in jax.tree.leaves(params16)} == {jnp.dtype(jnp.bfloat16)}
    tokens, mask, positions = _batch()
    logits32 = _forward(params32, tokens, positions, mask, cfg32)
    logits16 = _forward(params16, tokens, positions, mask, cfg16)
    assert logits16.dtype == jnp.float32
    scale = float(np.abs(np.asarray(logits32)).max())
    assert _max_diff(logits16, logits32, mask) <= 0.1 * scale  # bf16 has ~3 significant digits

    hf.save_checkpoint(str(tmp_path / "out"), cfg16, params16)
    stored = safetensors.numpy.load_file(str(tmp_path / "out" / hf.SINGLE_FILE))
    assert {x.dtype.name for x in stored.values()} == {"bfloat16"}
    assert json.load(open(tmp_path / "out" / "config.json"))["dtype"] == "bfloat16"
    _, again, _ = hf.load_checkpoint(str(tmp_path / "out"), param_dtype="bfloat16")
    jax.tree.map(np.testing.assert_array_equal, again, params16)
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    assert reloaded.dtype == torch.bfloat16


def test_generation_defaults_round_trip(tmp_path):
    cfg, params, gen = hf.load_checkpoint(fixtures.make_hf_checkpoint(tmp_path, "llama"))
    assert gen.eos_token_ids == (2,) and gen.bos_token_id == 1  # LlamaConfig's defaults
    gen = hf.GenerationDefaults(
        eos_token_ids=(2, 7), bos_token_id=1, pad_token_id=0, do_sample=True, temperature=0.6
    )
    hf.save_checkpoint(str(tmp_path / "out"), cfg, params, generation=gen)
    assert hf.load_checkpoint(str(tmp_path / "out"))[2] == gen
    hf_gen = transformers.GenerationConfig.from_pretrained(tmp_path / "out")
    assert hf_gen.eos_token_id == [2, 7] and hf_gen.temperature == 0.6


# --- Bad inputs: one-line errors naming the file and the tensor or field ---


def _checkpoint(tmp_path, family="qwen2", tie=False) -> str:
    return fixtures.save_hf_model(_model(family, tie), tmp_path / "ckpt")


def _edit_tensors(folder, edit) -> str:
    path = os.path.join(folder, hf.SINGLE_FILE)
    tensors = safetensors.numpy.load_file(path)
    edit(tensors)
    safetensors.numpy.save_file(tensors, path, {"format": "pt"})
    return path


def _raises(error, *parts):
    """pytest.raises matching every part, in order, on one line."""
    return pytest.raises(error, match=".*".join(re.escape(str(p)) for p in parts))


def test_error_no_config(tmp_path):
    with _raises(FileNotFoundError, tmp_path / "config.json"):
        hf.load_checkpoint(str(tmp_path))


def test_error_no_safetensors(tmp_path):
    folder = _checkpoint(tmp_path)
    os.remove(os.path.join(folder, hf.SINGLE_FILE))
    with _raises(FileNotFoundError, folder, hf.SINGLE_FILE, hf.INDEX_FILE):
        hf.load_checkpoint(folder)


def test_error_missing_tensor(tmp_path):
    folder = _checkpoint(tmp_path)
    name = "model.layers.1.self_attn.v_proj.bias"
    path = _edit_tensors(folder, lambda t: t.pop(name))
    with _raises(hf.CheckpointError, path, name):
        hf.load_checkpoint(folder)


def test_error_untied_without_lm_head(tmp_path):
    folder = _checkpoint(tmp_path, "llama")
    path = _edit_tensors(folder, lambda t: t.pop("lm_head.weight"))
    with _raises(hf.CheckpointError, path, "lm_head.weight"):
        hf.load_checkpoint(folder)


def test_error_missing_tensor_in_index(tmp_path):
    folder = fixtures.make_hf_checkpoint(tmp_path, "qwen3", sharded=True)
    index_path = os.path.join(folder, hf.INDEX_FILE)
    index = json.load(open(index_path))
    name = "model.layers.0.self_attn.q_norm.weight"
    del index["weight_map"][name]
    json.dump(index, open(index_path, "w"))
    with _raises(hf.CheckpointError, index_path, "model-00001-of-", name):
        hf.load_checkpoint(folder)


def test_error_shape_mismatch(tmp_path):
    folder = _checkpoint(tmp_path)
    name = "model.layers.0.mlp.down_proj.weight"
    path = _edit_tensors(folder, lambda t: t.update({name: t[name][:, :-1].copy()}))
    with _raises(hf.CheckpointError, path, name, "(64, 95)", "(64, 96)"):
        hf.load_checkpoint(folder)


def test_error_unsupported_model_type(tmp_path):
    folder = _checkpoint(tmp_path)
    path = os.path.join(folder, "config.json")
    hf_config = json.load(open(path))
    hf_config["model_type"] = "mistral"
    json.dump(hf_config, open(path, "w"))
    with _raises(config_lib.UnsupportedConfigError, path, "model_type", "mistral"):
        hf.load_checkpoint(folder)


def test_error_index_lists_tensor_in_wrong_shard(tmp_path):
    folder = fixtures.make_hf_checkpoint(tmp_path, "qwen2", sharded=True)
    index_path = os.path.join(folder, hf.INDEX_FILE)
    index = json.load(open(index_path))
    name = "model.norm.weight"
    wrong = next(f for f in index["weight_map"].values() if f != index["weight_map"][name])
    index["weight_map"][name] = wrong
    json.dump(index, open(index_path, "w"))
    with _raises(hf.CheckpointError, os.path.join(folder, wrong), name):
        hf.load_checkpoint(folder)


def test_error_corrupt_safetensors(tmp_path):
    folder = _checkpoint(tmp_path)
    path = os.path.join(folder, hf.SINGLE_FILE)
    with open(path, "wb") as f:
        f.write(b"not a safetensors file")
    with _raises(hf.CheckpointError, path, "not a readable safetensors file"):
        hf.load_checkpoint(folder)


def test_error_index_points_to_missing_shard(tmp_path):
    folder = fixtures.make_hf_checkpoint(tmp_path, "qwen2", sharded=True)
    index_path = os.path.join(folder, hf.INDEX_FILE)
    shard = json.load(open(index_path))["weight_map"]["model.norm.weight"]
    os.remove(os.path.join(folder, shard))
    with _raises(FileNotFoundError, index_path, shard):
        hf.load_checkpoint(folder)


def test_error_unexpected_tensor(tmp_path):
    folder = _checkpoint(tmp_path)
    name = "model.layers.0.mlp.gate_proj.bias"
    path = _edit_tensors(folder, lambda t: t.update({name: np.zeros(96, np.float32)}))
    with _raises(hf.CheckpointError, path, name):
        hf.load_checkpoint(folder)


def test_harmless_extras_are_accepted(tmp_path):
    folder = _checkpoint(tmp_path, "llama", tie=True)

    def edit(tensors):
        tensors["model.layers.0.self_attn.rotary_emb.inv_freq"] = np.ones(8, np.float32)
        tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"].copy()  # a tied copy

    _edit_tensors(folder, edit)
    _, params, _ = hf.load_checkpoint(folder)
    assert params.lm_head is None


def test_error_tied_lm_head_that_differs(tmp_path):
    folder = _checkpoint(tmp_path, "qwen3", tie=True)
    edit = lambda t: t.update({"lm_head.weight": t["model.embed_tokens.weight"] + 1})
    path = _edit_tensors(folder, edit)
    with _raises(hf.CheckpointError, path, "lm_head.weight", "tie_word_embeddings"):
        hf.load_checkpoint(folder)


def test_save_rejects_params_of_another_config(tmp_path):
    cfg, params, _ = hf.load_checkpoint(_checkpoint(tmp_path, "qwen2", tie=True))
    untied = config_lib.ModelConfig(**{**vars(cfg), "tie_embeddings": False})
    with _raises(ValueError, "params.lm_head"):
        hf.save_checkpoint(str(tmp_path / "out"), untied, params)
