"""A frozen model beside the policy (OPD/DistIL teacher, rubric judge): an HF checkpoint that
shares the policy's tokenizer, placed shard by shard on the policy's mesh."""

from __future__ import annotations

import dataclasses

from jax.sharding import Mesh

from rlvr_jax import mesh as mesh_lib
from rlvr_jax.errors import ConfigError
from rlvr_jax.models import config as config_lib
from rlvr_jax.models import hf
from rlvr_jax.models import params as params_lib
from rlvr_jax.models import tokenizer as tokenizer_lib


@dataclasses.dataclass(frozen=True)
class FrozenModel:
    model_cfg: config_lib.ModelConfig
    params: params_lib.Params


def load(
    folder: str, student_cfg: config_lib.ModelConfig, tok: tokenizer_lib.Tokenizer, mesh: Mesh
) -> FrozenModel:
    """The HF checkpoint in `folder` in the student's dtypes; its tokenizer must be the student's
    (its log-probs are compared token by token with the student's)."""
    try:
        cfg = config_lib.read_hf_config(
            folder,
            param_dtype=student_cfg.param_dtype,
            compute_dtype=student_cfg.compute_dtype,
        )
        frozen_tok = tokenizer_lib.load_tokenizer(folder)
    except Exception as e:  # noqa: BLE001  (tokenizers raises plain Exception on a bad file)
        raise ConfigError(f"teacher {folder}: cannot load it: {e}") from None
    probe = "Compute 12 + 34 = 46. \\boxed{46}"
    if (
        frozen_tok.hf.get_vocab() != tok.hf.get_vocab()
        or frozen_tok.encode(probe) != tok.encode(probe)
        or cfg.vocab_size < tok.vocab_size
    ):
        raise ConfigError(
            f"teacher {folder}: its tokenizer differs from the student's (OPD and DistIL compare "
            "log-probs token by token, so both must share one vocabulary)"
        )
    shardings = mesh_lib.param_shardings(mesh, params_lib.param_axes(cfg))
    return FrozenModel(model_cfg=cfg, params=hf.load_params(folder, cfg, shardings=shardings))
