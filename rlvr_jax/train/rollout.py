"""Rollouts: prompts -> G samples each -> host verifiers -> rewards, and the TrainBatch built from
them.

Rows are group-major: rows p*G .. p*G+G-1 are the G samples of prompt p.
"""

# pylint: disable=invalid-name
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import jax
import numpy as np

from rlvr_jax import sampling
from rlvr_jax.data import types as data_types
from rlvr_jax.models import config as config_lib
from rlvr_jax.models import params as params_lib
from rlvr_jax.models import tokenizer as tokenizer_lib
from rlvr_jax.train import state as state_lib


@dataclasses.dataclass(frozen=True)
class Rollout:
    """One batch of scored samples, on the host."""

    examples: list[data_types.Example]  # P prompts
    sample: sampling.SampleOutput  # B = P * G rows, numpy
    texts: list[str]  # B decoded completions
    rewards_B: np.ndarray  # float32
    correct_B: np.ndarray  # bool
    statuses: list[str]  # B verifier statuses


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
    score_fn: Callable[[list[str], list[str]], list],
    mesh: jax.sharding.Mesh | None = None,
) -> Rollout:
    """Samples G completions per example and scores them with `score_fn(texts, answers)`.

    `score_fn` returns one verdict per text with `.reward`, `.correct` and `.status`.
    """
    prompts = [p for p in encode_prompts(tok, examples, system) for _ in range(G)]
    out = jax.device_get(
        sampling.generate(params, prompts, key, model_cfg=model_cfg, cfg=sampling_cfg, mesh=mesh)
    )
    texts = [
        tok.decode(row[:n], skip_special_tokens=True)
        for row, n in zip(out.tokens_BxTc, out.lengths_B, strict=True)
    ]
    answers = [ex.answer for ex in examples for _ in range(G)]
    verdicts = score_fn(texts, answers)
    return Rollout(
        examples=list(examples),
        sample=out,
        texts=texts,
        rewards_B=np.asarray([v.reward for v in verdicts], np.float32),
        correct_B=np.asarray([v.correct for v in verdicts], bool),
        statuses=[v.status for v in verdicts],
    )


def concat(rollouts: Sequence[Rollout]) -> Rollout:
    """Rollouts of the same buckets stacked along the batch."""
    if len(rollouts) == 1:
        return rollouts[0]
    Tp = max(r.sample.prompt_BxTp.shape[1] for r in rollouts)
    samples = [_left_pad_prompt(r.sample, Tp) for r in rollouts]
    sample_out = jax.tree.map(lambda *xs: np.concatenate(xs, axis=0), *samples)
    return Rollout(
        examples=[e for r in rollouts for e in r.examples],
        sample=sample_out,
        texts=[t for r in rollouts for t in r.texts],
        rewards_B=np.concatenate([r.rewards_B for r in rollouts]),
        correct_B=np.concatenate([r.correct_B for r in rollouts]),
        statuses=[s for r in rollouts for s in r.statuses],
    )


def _left_pad_prompt(s: sampling.SampleOutput, Tp: int) -> sampling.SampleOutput:
    """The same rollout with its prompts left-padded to Tp (masked padding)."""
    extra = Tp - s.prompt_BxTp.shape[1]
    if extra == 0:
        return s
    pad = lambda x, v: np.pad(np.asarray(x), ((0, 0), (extra, 0)), constant_values=v)
    return s.replace(
        prompt_BxTp=pad(s.prompt_BxTp, 0), prompt_mask_BxTp=pad(s.prompt_mask_BxTp, False)
    )


def select_groups(r: Rollout, keep_P: np.ndarray, G: int) -> Rollout:
    """Only the groups (prompts) where keep_P is True."""
    keep_B = np.repeat(keep_P, G)
    idx = np.flatnonzero(keep_B)
    return Rollout(
        examples=[e for e, k in zip(r.examples, keep_P, strict=True) if k],
        sample=jax.tree.map(lambda x: x[idx], r.sample),
        texts=[r.texts[i] for i in idx],
        rewards_B=r.rewards_B[idx],
        correct_B=r.correct_B[idx],
        statuses=[r.statuses[i] for i in idx],
    )


def to_batch(
    r: Rollout, adv_B: np.ndarray, ref_logps_BxTc: np.ndarray | None = None
) -> state_lib.TrainBatch:
    """The TrainBatch of a rollout: per-sequence advantages broadcast over completion tokens."""
    s = r.sample
    mask_BxTc = np.asarray(s.mask_BxTc, bool)
    adv_BxTc = np.where(mask_BxTc, np.asarray(adv_B, np.float32)[:, None], 0.0).astype(np.float32)
    return state_lib.TrainBatch(
        prompt_BxTp=np.asarray(s.prompt_BxTp, np.int32),
        prompt_mask_BxTp=np.asarray(s.prompt_mask_BxTp, bool),
        completion_BxTc=np.asarray(s.tokens_BxTc, np.int32),
        completion_mask_BxTc=mask_BxTc,
        old_logps_BxTc=np.asarray(s.logps_BxTc, np.float32),
        adv_BxTc=adv_BxTc,
        ref_logps_BxTc=ref_logps_BxTc,
    )
