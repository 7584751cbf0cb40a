"""ModelConfig: HF config parsing (v4 and v5 layouts), unsupported fields, export, param counts."""

import dataclasses
import json
import re

import pytest
import transformers

from rlvr_jax.models import config as config_lib
from rlvr_jax.models import params as params_lib
from tests import fixtures

LLAMA3 = config_lib.RopeScaling(
    rope_type="llama3",
    factor=8.0,
    low_freq_factor=1.0,
    high_freq_factor=4.0,
    original_max_position_embeddings=16,
)


def test_from_hf_config_v5_rope_parameters():
    hf = fixtures.make_hf_config("llama").to_dict()
    assert "rope_parameters" in hf and "rope_scaling" not in hf
    cfg = config_lib.from_hf_config(hf)
    assert cfg.rope_theta == 500000.0 and cfg.rope_scaling == LLAMA3
    assert (cfg.model_type, cfg.vocab_size, cfg.d_model, cfg.num_layers) == ("llama", 97, 64, 2)
    assert (cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.mlp_dim) == (4, 2, 16, 96)
    assert not (cfg.qkv_bias or cfg.qk_norm or cfg.tie_embeddings)


@pytest.mark.parametrize("family", fixtures.FAMILIES)
def test_from_hf_config_family_features(family):
    cfg = config_lib.from_hf_config(fixtures.make_hf_config(family, tie=True).to_dict())
    assert cfg.model_type == family and cfg.tie_embeddings
    assert cfg.qkv_bias == (family == "qwen2")
    assert cfg.qk_norm == (family == "qwen3")
    assert cfg.rope_scaling.rope_type == ("llama3" if family == "llama" else "default")


def test_from_hf_config_v4_rope_theta_and_scaling():
    v5 = fixtures.make_hf_config("llama").to_dict()
    v4 = {k: v for k, v in v5.items() if k != "rope_parameters"}
    v4["rope_theta"] = 500000.0
    v4["rope_scaling"] = {  # v4 spelled the type as "type" in older checkpoints
        "type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 16,
    }
    assert config_lib.from_hf_config(v4) == config_lib.from_hf_config(v5)
    v4.update(rope_theta=1e6, rope_scaling=None)  # Qwen2.5-style: plain theta, no scaling
    cfg = config_lib.from_hf_config(v4)
    assert cfg.rope_theta == 1e6 and cfg.rope_scaling == config_lib.RopeScaling()
    v4["rope_scaling"] = {"rope_type": "linear", "factor": 2.0}
    assert config_lib.from_hf_config(v4).rope_scaling.factor == 2.0


@pytest.mark.parametrize(
    "field,value,expected",
    [
        ("hidden_act", "gelu", "hidden_act"),
        ("use_sliding_window", True, "use_sliding_window"),
        ("mlp_bias", True, "mlp_bias"),
        ("pretraining_tp", 2, "pretraining_tp"),
        ("partial_rotary_factor", 0.5, "partial_rotary_factor"),
        ("layer_types", ["full_attention", "sliding_attention"], "layer_types"),
        ("model_type", "mistral", "model_type"),
        ("architectures", ["MistralForCausalLM"], "architectures"),
        ("rope_parameters", {"rope_type": "yarn", "factor": 4.0}, "rope_type"),
        ("rope_parameters", {"rope_type": "llama3", "beta_fast": 32}, "beta_fast"),
        ("hidden_size", None, "hidden_size"),
    ],
)
def test_unsupported_fields_raise_naming_the_field(field, value, expected):
    hf = fixtures.make_hf_config("llama").to_dict()
    if value is None:
        del hf[field]
    else:
        hf[field] = value
    with pytest.raises(config_lib.UnsupportedConfigError, match=f"ckpt/config.json: .*{expected}"):
        config_lib.from_hf_config(hf, "ckpt/config.json")


def test_read_hf_config_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "config.json"))):
        config_lib.read_hf_config(str(tmp_path))
    (tmp_path / "config.json").write_text('{"model_type": "qwen2",\n oops}')
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 'config.json'}:2: invalid JSON")):
        config_lib.read_hf_config(str(tmp_path))


ROUND_TRIP = {
    "tiny": config_lib.get_preset("tiny"),
    "qwen2_untied": config_lib.get_preset("qwen2_3m", tie_embeddings=False),
    "qwen3": config_lib.ModelConfig(
        model_type="qwen3",
        vocab_size=97,
        d_model=64,
        num_layers=3,
        num_heads=4,
        num_kv_heads=1,
        head_dim=32,  # != d_model / heads, as in Qwen3
        mlp_dim=96,
        qk_norm=True,
        rms_norm_eps=1e-5,
    ),
    "llama3": config_lib.ModelConfig(
        model_type="llama",
        vocab_size=97,
        d_model=64,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        head_dim=16,
        mlp_dim=96,
        rope_theta=500000.0,
        rope_scaling=LLAMA3,
        max_position_embeddings=131072,
    ),
    "llama_linear_bias": config_lib.ModelConfig(
        model_type="llama",
        vocab_size=97,
        d_model=64,
        num_layers=1,
        num_heads=2,
        num_kv_heads=2,
        head_dim=32,
        mlp_dim=96,
        qkv_bias=True,
        rope_scaling=config_lib.RopeScaling(rope_type="linear", factor=4.0),
    ),
}
_HF_CLASSES = {
    "qwen2": transformers.Qwen2Config,
    "qwen3": transformers.Qwen3Config,
    "llama": transformers.LlamaConfig,
}


@pytest.mark.parametrize("name", sorted(ROUND_TRIP))
def test_to_hf_config_round_trip(name):
    cfg = ROUND_TRIP[name]
    hf = config_lib.to_hf_config(cfg)
    json.dumps(hf)  # plain JSON
    assert config_lib.from_hf_config(hf) == cfg
    # transformers reads the same dict to the same model: through its own config class and back.
    hf_config = _HF_CLASSES[cfg.model_type](**hf)
    assert config_lib.from_hf_config(hf_config.to_dict()) == cfg


def test_to_hf_config_extra_fields():
    hf = config_lib.to_hf_config(config_lib.get_preset("tiny"), eos_token_id=3)
    assert hf["eos_token_id"] == 3 and hf["architectures"] == ["Qwen2ForCausalLM"]


@pytest.mark.parametrize("name", sorted(ROUND_TRIP))
def test_num_params_matches_pytree(name):
    cfg = ROUND_TRIP[name]
    # param_shapes is init_params under eval_shape: the same pytree, without compiling the init.
    assert cfg.num_params() == params_lib.count_params(params_lib.param_shapes(cfg))


@pytest.mark.parametrize("family,tie", [("qwen2", True), ("qwen3", False), ("llama", True)])
def test_num_params_matches_transformers(family, tie):
    model = fixtures.make_hf_model(family, tie=tie)
    cfg = config_lib.from_hf_config(model.config.to_dict())
    assert cfg.num_params() == model.num_parameters()


def test_presets_and_validation():
    assert config_lib.get_preset("tiny", num_layers=1).num_layers == 1
    with pytest.raises(ValueError, match="unknown model preset 'nope'"):
        config_lib.get_preset("nope")
    base = config_lib.get_preset("tiny")
    for field, value in [("num_kv_heads", 3), ("head_dim", 33), ("param_dtype", "float16")]:
        with pytest.raises(ValueError, match=field):
            dataclasses.replace(base, **{field: value})
    with pytest.raises(config_lib.UnsupportedConfigError, match="yarn"):
        config_lib.RopeScaling(rope_type="yarn")
