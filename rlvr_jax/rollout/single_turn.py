"""The single-turn rollout engine: one completion per row from the jitted KV-cache sampler (the
static one, or the continuous-batching engine), scored by the task's verifier on the host."""

# pylint: disable=invalid-name
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import numpy as np

from rlvr_jax import distributed, sampling
from rlvr_jax.data import types as data_types
from rlvr_jax.engine import engine as engine_lib
from rlvr_jax.models import config as config_lib
from rlvr_jax.models import params as params_lib
from rlvr_jax.models import tokenizer as tokenizer_lib
from rlvr_jax.rollout import types as types_lib
from rlvr_jax.rollout.types import Rollout, ScoreFn


def encode_prompts(
    tok: tokenizer_lib.Tokenizer, examples: Sequence[data_types.Example], system: str | None
) -> list[list[int]]:
    return [tok.apply_chat_template(ex.prompt, system=system) for ex in examples]


def sample(
    params: params_lib.Params,
    tok: tokenizer_lib.Tokenizer,
    examples: Sequence[data_types.Example],
    key: jax.Array,
    *,
    G: int,
    system: str | None,
    model_cfg: config_lib.ModelConfig,
    sampling_cfg: sampling.SamplingConfig,
    score_fn: ScoreFn,
    mesh: jax.sharding.Mesh | None = None,
    continuous: Continuous | None = None,
) -> Rollout:
    """Samples G completions per example and scores them with `score_fn(texts, examples)` (the
    examples repeated G times, row by row). With `continuous`, the engine of rlvr_jax/engine
    samples them (one process), else the static sampler.

    `score_fn` returns one verdict per text with `.reward`, `.correct` and `.status`. With a `mesh`,
    `examples` are this process's (every process passes as many), `params` live on the mesh and
    `key` is replicated on it (distributed.replicated_key).
    """
    if continuous is not None:
        out = continuous.generate(
            params, encode_prompts(tok, examples, system), key, G, model_cfg, sampling_cfg, mesh
        )
    else:
        prompts = [p for p in encode_prompts(tok, examples, system) for _ in range(G)]
        out = generate(
            params, prompts, key, model_cfg=model_cfg, sampling_cfg=sampling_cfg, mesh=mesh
        )
    texts = [
        tok.decode(row[:n], skip_special_tokens=True)
        for row, n in zip(out.tokens_BxTc, out.lengths_B, strict=True)
    ]
    verdicts = list(score_fn(texts, [ex for ex in examples for _ in range(G)]))
    return Rollout(
        examples=list(examples),
        sample=out,
        texts=texts,
        rewards_B=np.asarray([v.reward for v in verdicts], np.float32),
        correct_B=np.asarray([v.correct for v in verdicts], bool),
        verdicts=verdicts,
    )


def generate(
    params: params_lib.Params,
    prompts: Sequence[Sequence[int]],
    key: jax.Array,
    *,
    model_cfg: config_lib.ModelConfig,
    sampling_cfg: sampling.SamplingConfig,
    mesh: jax.sharding.Mesh | None = None,
) -> sampling.SampleOutput:
    """`sampling.generate` of this process's prompts, as numpy; on a mesh, they are its block of
    the global batch and its rows come back.

    Every process pads to the same prompt bucket (the longest prompt over all of them) and to a
    multiple of its batch shards, repeating its last prompt; the repeats are dropped afterwards.
    """
    cfg = sampling_cfg
    if mesh is None:
        return jax.device_get(sampling.generate(params, prompts, key, model_cfg=model_cfg, cfg=cfg))
    n = len(prompts)
    rows = distributed.shard_rows(n, mesh)
    prompt_BxTp, mask_BxTp = sampling.pad_prompts(prompts + [prompts[-1]] * (rows - n), cfg)
    Tp = distributed.max_over_processes(prompt_BxTp.shape[1])
    prompt_BxTp = types_lib.left_pad(prompt_BxTp, Tp, 0)
    mask_BxTp = types_lib.left_pad(mask_BxTp, Tp, False)
    padded = distributed.global_rows((prompt_BxTp, mask_BxTp), mesh)
    out = sampling.generate(params, padded, key, model_cfg=model_cfg, cfg=cfg, mesh=mesh)
    return jax.tree.map(lambda x: x[:n], distributed.local_rows(out, mesh))


@dataclasses.dataclass(frozen=True)
class Continuous:
    """The continuous-batching engine with its sizes; keeps the last engine (its buffers and
    compiled shapes) for the next call."""

    cfg: engine_lib.EngineConfig
    _cache: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)

    def generate(self, params, prompts, key, G, model_cfg, sampling_cfg, mesh):
        if mesh is not None and jax.process_count() > 1:
            raise ValueError("the continuous engine runs in one process (sampling.engine)")
        out, self._cache["engine"] = engine_lib.generate(
            params,
            prompts,
            key,
            G=G,
            model_cfg=model_cfg,
            cfg=sampling_cfg,
            engine_cfg=self.cfg,
            engine=self._cache.get("engine"),
            mesh=mesh,
        )
        return out


@dataclasses.dataclass(frozen=True)
class SingleTurn:
    """`engine(params, examples, key, sampling_cfg, score_fn) -> Rollout`: G samples per example
    on `mesh`, decoded with `tok` and scored by `score_fn`."""

    tok: tokenizer_lib.Tokenizer
    model_cfg: config_lib.ModelConfig
    G: int
    system: str | None
    mesh: jax.sharding.Mesh | None = None
    continuous: Continuous | None = None  # None: the static sampler

    def __call__(
        self,
        params: params_lib.Params,
        examples: Sequence[data_types.Example],
        key: jax.Array,
        sampling_cfg: sampling.SamplingConfig,
        score_fn: ScoreFn,
    ) -> Rollout:
        return sample(
            params,
            self.tok,
            examples,
            key,
            G=self.G,
            system=self.system,
            model_cfg=self.model_cfg,
            sampling_cfg=sampling_cfg,
            score_fn=score_fn,
            mesh=self.mesh,
            continuous=self.continuous,
        )
