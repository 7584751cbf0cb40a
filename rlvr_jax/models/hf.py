"""HF checkpoint folders <-> (ModelConfig, Params), both ways, with safetensors and no torch.

Reads and writes config.json, model.safetensors (or shards plus model.safetensors.index.json) and
generation_config.json. One table, `tensor_specs`, maps every HF tensor name to a leaf of `Params`;
loading and saving both walk it, so the two directions cannot drift apart.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
from collections.abc import Sequence
from typing import Any

import jax
import ml_dtypes  # noqa: F401  (registers numpy's "bfloat16" dtype, which safe_open needs for BF16)
import numpy as np
import safetensors
import safetensors.numpy

from rlvr_jax.models import config as config_lib
from rlvr_jax.models import params as params_lib

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
GENERATION_FILE = "generation_config.json"
_SHARD_RE = re.compile(r"^model-\d{5}-of-\d{5}\.safetensors$")
# Buffers some exporters write into the state dict; they carry no learned weights.
_HARMLESS_SUFFIXES = ("rotary_emb.inv_freq",)


@dataclasses.dataclass(frozen=True, kw_only=True)
class GenerationDefaults:
    """The sampling defaults a checkpoint ships with (generation_config.json, else config.json)."""

    eos_token_ids: tuple[int, ...] = ()
    bos_token_id: int | None = None
    pad_token_id: int | None = None
    do_sample: bool | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None

    def to_hf(self) -> dict[str, Any]:
        """The generation_config.json dict; fields that are None are left out."""
        out: dict[str, Any] = {}
        if self.eos_token_ids:
            eos = list(self.eos_token_ids)
            out["eos_token_id"] = eos[0] if len(eos) == 1 else eos
        for name in ("bos_token_id", "pad_token_id", "do_sample", "temperature", "top_p", "top_k"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        return out


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """One HF tensor and the `Params` leaf it becomes.

    HF `nn.Linear` weights are [out, in]; ours put the input first, so `transpose` tensors are read
    as `w.T.reshape(ours)` and written as `ours.reshape(in, out).T`. The rest are plain reshapes.
    """

    hf_name: str
    path: str  # dotted path into Params, e.g. "layers.3.q"
    hf_shape: tuple[int, ...]
    shape: tuple[int, ...]  # our shape
    transpose: bool

    def to_ours(self, w: np.ndarray) -> np.ndarray:
        return w.T.reshape(self.shape) if self.transpose else w.reshape(self.shape)

    def to_hf(self, x: np.ndarray) -> np.ndarray:
        if self.transpose:
            out, inp = self.hf_shape
            return np.ascontiguousarray(x.reshape(inp, out).T)
        return np.ascontiguousarray(x.reshape(self.hf_shape))


def tensor_specs(cfg: config_lib.ModelConfig) -> list[TensorSpec]:
    """The HF <-> Params name and layout table for `cfg`: the single place the mapping lives."""
    D, H, N, K, F, V = cfg.dims
    specs = [TensorSpec("model.embed_tokens.weight", "embed", (V, D), (V, D), False)]
    for i in range(cfg.num_layers):
        hf, us = f"model.layers.{i}.", f"layers.{i}."
        specs += [
            TensorSpec(hf + "input_layernorm.weight", us + "attn_norm", (D,), (D,), False),
            TensorSpec(hf + "self_attn.q_proj.weight", us + "q", (H * K, D), (D, H, K), True),
            TensorSpec(hf + "self_attn.k_proj.weight", us + "k", (N * K, D), (D, N, K), True),
            TensorSpec(hf + "self_attn.v_proj.weight", us + "v", (N * K, D), (D, N, K), True),
            TensorSpec(hf + "self_attn.o_proj.weight", us + "o", (D, H * K), (H, K, D), True),
            TensorSpec(hf + "post_attention_layernorm.weight", us + "mlp_norm", (D,), (D,), False),
            TensorSpec(hf + "mlp.gate_proj.weight", us + "gate", (F, D), (D, F), True),
            TensorSpec(hf + "mlp.up_proj.weight", us + "up", (F, D), (D, F), True),
            TensorSpec(hf + "mlp.down_proj.weight", us + "down", (D, F), (F, D), True),
        ]
        if cfg.qkv_bias:
            specs += [
                TensorSpec(hf + "self_attn.q_proj.bias", us + "q_bias", (H * K,), (H, K), False),
                TensorSpec(hf + "self_attn.k_proj.bias", us + "k_bias", (N * K,), (N, K), False),
                TensorSpec(hf + "self_attn.v_proj.bias", us + "v_bias", (N * K,), (N, K), False),
            ]
        if cfg.qk_norm:
            specs += [
                TensorSpec(hf + "self_attn.q_norm.weight", us + "q_norm", (K,), (K,), False),
                TensorSpec(hf + "self_attn.k_norm.weight", us + "k_norm", (K,), (K,), False),
            ]
    specs.append(TensorSpec("model.norm.weight", "final_norm", (D,), (D,), False))
    if not cfg.tie_embeddings:
        specs.append(TensorSpec("lm_head.weight", "lm_head", (V, D), (D, V), True))
    return specs


def _leaf_path(keypath: Sequence[Any]) -> str:
    """The dotted path of a Params leaf, e.g. `layers.3.q`."""
    return ".".join(str(getattr(k, "name", getattr(k, "idx", k))) for k in keypath)


class CheckpointError(ValueError):
    """A checkpoint folder's tensors do not match what its config.json describes."""


# --- Loading ---


def _read_json(path: str) -> dict[str, Any]:
    with open(path) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{e.lineno}: invalid JSON: {e.msg}") from None


def _locate_tensors(folder: str) -> tuple[dict[str, str], str]:
    """Maps each tensor name to the safetensors file holding it; also says where it looked."""
    single = os.path.join(folder, SINGLE_FILE)
    index = os.path.join(folder, INDEX_FILE)
    if os.path.isfile(single):  # transformers prefers the single file too
        with _open(single) as f:
            return {name: single for name in f.keys()}, single
    if not os.path.isfile(index):
        raise FileNotFoundError(
            f"{folder}: no {SINGLE_FILE} or {INDEX_FILE} (only safetensors checkpoints load)"
        )
    weight_map = _read_json(index).get("weight_map")
    if not isinstance(weight_map, dict):
        raise CheckpointError(f"{index}: field weight_map is missing or not an object")
    for name, shard in weight_map.items():
        if not os.path.isfile(os.path.join(folder, shard)):
            raise FileNotFoundError(
                f"{index}: shard file {os.path.join(folder, shard)} (holding tensor {name}) "
                "does not exist"
            )
    shards = ", ".join(sorted(set(weight_map.values())))
    where = {name: os.path.join(folder, shard) for name, shard in weight_map.items()}
    return where, f"{index} (shards {shards})"


def _open(path: str) -> Any:
    try:
        return safetensors.safe_open(path, framework="numpy")
    except Exception as e:  # the Rust reader's errors carry no file name
        raise CheckpointError(f"{path}: not a readable safetensors file: {e}") from None


_FLOAT_DTYPES = ("BF16", "F16", "F32", "F64")


def _read_tensor(files: dict[str, Any], path: str, spec: TensorSpec) -> np.ndarray:
    f, names = files[path]
    if spec.hf_name not in names:
        raise CheckpointError(f"{path}: tensor {spec.hf_name} is missing (the index lists it here)")
    view = f.get_slice(spec.hf_name)
    shape, dtype = tuple(view.get_shape()), view.get_dtype()
    if shape != spec.hf_shape:
        raise CheckpointError(
            f"{path}: tensor {spec.hf_name} has shape {shape}, expected {spec.hf_shape}"
        )
    if dtype not in _FLOAT_DTYPES:
        raise CheckpointError(
            f"{path}: tensor {spec.hf_name} has dtype {dtype}, expected one of {_FLOAT_DTYPES}"
        )
    return f.get_tensor(spec.hf_name)


def load_params(
    folder: str, cfg: config_lib.ModelConfig, shardings: params_lib.Params | None = None
) -> params_lib.Params:
    """Reads the safetensors of `folder` into a Params pytree of `cfg.param_dtype` jax arrays.

    With `shardings` (a Params pytree of jax Shardings), each tensor is placed shard by shard from
    the host copy, so no device ever holds more than its shards; on several processes, each one
    places only its own devices' shards.
    """
    where, searched = _locate_tensors(folder)
    specs = tensor_specs(cfg)
    expected = {s.hf_name for s in specs}
    config_path = os.path.join(folder, "config.json")
    for name in where:
        if name in expected or name.endswith(_HARMLESS_SUFFIXES):
            continue
        if name == "lm_head.weight" and cfg.tie_embeddings:
            continue  # checked against the embedding below
        raise CheckpointError(
            f"{where[name]}: unexpected tensor {name}, which the model described by "
            f"{config_path} does not use"
        )
    dtype = np.dtype(cfg.param_dtype)
    by_path: dict[str, np.ndarray] = {}
    with contextlib.ExitStack() as stack:
        files = {}
        for path in sorted(set(where.values())):
            f = stack.enter_context(_open(path))
            files[path] = (f, set(f.keys()))
        for spec in specs:
            if spec.hf_name not in where:
                raise CheckpointError(f"{searched}: tensor {spec.hf_name} is missing")
            w = _read_tensor(files, where[spec.hf_name], spec)
            by_path[spec.path] = spec.to_ours(w).astype(dtype)
        if cfg.tie_embeddings and "lm_head.weight" in where:
            # Older exports store the tied head as a copy; transformers ignores it, and so do we,
            # but only when it really is a copy.
            head = TensorSpec("lm_head.weight", "", (cfg.vocab_size, cfg.d_model), (), False)
            w = _read_tensor(files, where[head.hf_name], head)
            if not np.array_equal(w.astype(dtype), by_path["embed"]):
                raise CheckpointError(
                    f"{where[head.hf_name]}: tensor lm_head.weight differs from "
                    f"model.embed_tokens.weight but {config_path} sets tie_word_embeddings=true"
                )
    keypaths, treedef = jax.tree_util.tree_flatten_with_path(params_lib.param_shapes(cfg))
    leaves = [by_path[_leaf_path(kp)] for kp, _ in keypaths]
    assert len(leaves) == len(specs), "tensor_specs does not cover the Params pytree"
    params = jax.tree_util.tree_unflatten(treedef, leaves)
    if shardings is None:
        return jax.device_put(params)
    return jax.tree.map(
        lambda x, s: jax.make_array_from_callback(x.shape, s, lambda idx: x[idx]), params, shardings
    )


def read_generation_defaults(folder: str) -> GenerationDefaults:
    """Token ids and sampling defaults: generation_config.json over config.json, absent -> None."""
    merged: dict[str, Any] = {}
    sources = [os.path.join(folder, "config.json"), os.path.join(folder, GENERATION_FILE)]
    for path in sources:
        if not os.path.isfile(path):
            continue
        hf = _read_json(path)
        for key in ("eos_token_id", "bos_token_id", "pad_token_id"):
            if hf.get(key) is not None:
                merged[key] = (hf[key], path)
        if path.endswith(GENERATION_FILE):
            for key in ("do_sample", "temperature", "top_p", "top_k"):
                if hf.get(key) is not None:
                    merged[key] = (hf[key], path)

    def get(key: str, kind: type) -> Any:
        if key not in merged:
            return None
        value, path = merged[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ValueError(f"{path}: field {key}={value!r} is not a {kind.__name__}")
        return value

    eos = merged.get("eos_token_id", ([], ""))[0]
    eos_ids = tuple(eos) if isinstance(eos, list) else (eos,)
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in eos_ids):
        raise ValueError(f"{merged['eos_token_id'][1]}: field eos_token_id={eos!r} is not int(s)")
    return GenerationDefaults(
        eos_token_ids=eos_ids,
        bos_token_id=get("bos_token_id", int),
        pad_token_id=get("pad_token_id", int),
        do_sample=get("do_sample", bool),
        temperature=get("temperature", float),
        top_p=get("top_p", float),
        top_k=get("top_k", int),
    )


def load_checkpoint(
    folder: str, *, param_dtype: str | None = None, compute_dtype: str | None = None
) -> tuple[config_lib.ModelConfig, params_lib.Params, GenerationDefaults]:
    """Loads an HF folder (config.json + safetensors [+ generation_config.json]) without torch.

    `param_dtype` / `compute_dtype` override the ModelConfig defaults (float32); the weights are
    cast to `cfg.param_dtype` whatever dtype the files store.
    """
    overrides = {"param_dtype": param_dtype, "compute_dtype": compute_dtype}
    cfg = config_lib.read_hf_config(folder, **{k: v for k, v in overrides.items() if v is not None})
    params = load_params(folder, cfg)
    return cfg, params, read_generation_defaults(folder)


# --- Saving ---


def _split_shards(
    tensors: dict[str, np.ndarray], max_shard_bytes: int | None
) -> list[dict[str, np.ndarray]]:
    """Greedy packing in table order; a tensor larger than the limit gets a shard of its own."""
    shards: list[dict[str, np.ndarray]] = [{}]
    size = 0
    for name, x in tensors.items():
        if max_shard_bytes is not None and shards[-1] and size + x.nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = x
        size += x.nbytes
    return shards


def save_checkpoint(
    folder: str,
    cfg: config_lib.ModelConfig,
    params: params_lib.Params,
    *,
    generation: GenerationDefaults | None = None,
    max_shard_bytes: int | None = None,
) -> None:
    """Writes an HF folder that `transformers.AutoModelForCausalLM.from_pretrained` loads.

    Tensors are stored in `cfg.param_dtype` (bf16 stays bf16). Previous model*.safetensors files
    and the index in `folder` are removed first, so a stale shard can never shadow the new weights.
    """
    leaves = {_leaf_path(kp): x for kp, x in jax.tree_util.tree_flatten_with_path(params)[0]}
    specs = tensor_specs(cfg)
    missing = sorted({s.path for s in specs} ^ set(leaves))
    if missing:
        raise ValueError(f"params.{missing[0]} does not match the config (tied embeddings?)")
    dtype = np.dtype(cfg.param_dtype)
    tensors = {}
    for spec in specs:
        x = np.asarray(jax.device_get(leaves[spec.path]))
        if x.shape != spec.shape:
            raise ValueError(
                f"params.{spec.path} (HF {spec.hf_name}) has shape {x.shape}, expected {spec.shape}"
            )
        tensors[spec.hf_name] = spec.to_hf(x.astype(dtype))

    os.makedirs(folder, exist_ok=True)
    for name in os.listdir(folder):
        if name in (SINGLE_FILE, INDEX_FILE) or _SHARD_RE.match(name):
            os.remove(os.path.join(folder, name))
    shards = _split_shards(tensors, max_shard_bytes)
    metadata = {"format": "pt"}  # transformers refuses safetensors without it
    if len(shards) == 1:
        safetensors.numpy.save_file(shards[0], os.path.join(folder, SINGLE_FILE), metadata)
    else:
        weight_map = {}
        for i, shard in enumerate(shards):
            name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
            safetensors.numpy.save_file(shard, os.path.join(folder, name), metadata)
            weight_map.update(dict.fromkeys(shard, name))
        index = {
            "metadata": {"total_size": sum(x.nbytes for x in tensors.values())},
            "weight_map": weight_map,
        }
        _write_json(os.path.join(folder, INDEX_FILE), index)

    ids = {}
    if generation is not None:
        ids = {k: v for k, v in generation.to_hf().items() if k.endswith("token_id")}
        _write_json(os.path.join(folder, GENERATION_FILE), generation.to_hf())
    _write_json(os.path.join(folder, "config.json"), config_lib.to_hf_config(cfg, **ids))


def _write_json(path: str, obj: dict[str, Any]) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")
