"""Rollouts: prompts -> G samples each -> host verifiers -> rewards, and the TrainBatch built from
them.

Rows are group-major: rows p*G .. p*G+G-1 are the G samples of prompt p. On a mesh, each process
samples and scores its own prompts: their rows become its block of one global batch (see
train/distributed.py), and only its own completions come back to it.
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
from rlvr_jax.train import distributed
from rlvr_jax.train import state as state_lib


@dataclasses.dataclass(frozen=True)
class Rollout:
    """One batch of scored samples, on the host."""

    examples: list[data_types.Example]  # P prompts
    sample: sampling.SampleOutput  # B = P * G rows, numpy
    texts: list[str]  # B decoded completions
    rewards_B: np.ndarray  # float32
    correct_B: np.ndarray  # bool
    # B verifier verdicts (math, code or rubric): .reward, .correct, .status, .verifier_error
    verdicts: list

    @property
    def statuses(self) -> list[str]:
        return [v.status for v in self.verdicts]


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
    score_fn: Callable[[list[str], list[data_types.Example]], list],
    mesh: jax.sharding.Mesh | None = None,
) -> Rollout:
    """Samples G completions per example and scores them with `score_fn(texts, examples)` (the
    examples repeated G times, row by row).

    `score_fn` returns one verdict per text with `.reward`, `.correct` and `.status`. With a `mesh`,
    `examples` are this process's (every process passes as many), `params` live on the mesh and
    `key` is replicated on it (distributed.replicated_key).
    """
    prompts = [p for p in encode_prompts(tok, examples, system) for _ in range(G)]
    out = generate(params, prompts, key, model_cfg=model_cfg, sampling_cfg=sampling_cfg, mesh=mesh)
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
    rows = -(-n // distributed.local_shards(mesh)) * distributed.local_shards(mesh)
    prompt_BxTp, mask_BxTp = sampling.pad_prompts(prompts + [prompts[-1]] * (rows - n), cfg)
    Tp = distributed.max_over_processes(prompt_BxTp.shape[1])
    prompt_BxTp, mask_BxTp = _left_pad(prompt_BxTp, Tp, 0), _left_pad(mask_BxTp, Tp, False)
    padded = distributed.global_rows((prompt_BxTp, mask_BxTp), mesh)
    out = sampling.generate(params, padded, key, model_cfg=model_cfg, cfg=cfg, mesh=mesh)
    return jax.tree.map(lambda x: x[:n], distributed.local_rows(out, mesh))


def stats(r: Rollout) -> dict[str, np.ndarray]:
    """Per-row numbers behind the rollout metrics (numeric, so processes can gather them)."""
    statuses = np.asarray(r.statuses, dtype=object)
    return {
        "rewards": r.rewards_B,
        "correct": r.correct_B,
        "lengths": np.asarray(r.sample.lengths_B),
        "stopped": np.asarray(r.sample.stopped_B),
        "no_answer": np.isin(statuses, ("no_answer", "no_code")),
        "verifier_error": np.asarray([v.verifier_error for v in r.verdicts], bool),
    }


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
        verdicts=[v for r in rollouts for v in r.verdicts],
    )


def _left_pad_prompt(s: sampling.SampleOutput, Tp: int) -> sampling.SampleOutput:
    """The same rollout with its prompts left-padded to Tp (masked padding)."""
    if Tp == s.prompt_BxTp.shape[1]:
        return s
    return s.replace(
        prompt_BxTp=_left_pad(s.prompt_BxTp, Tp, 0),
        prompt_mask_BxTp=_left_pad(s.prompt_mask_BxTp, Tp, False),
    )


def _left_pad(x_BxT: np.ndarray, T: int, value) -> np.ndarray:
    x_BxT = np.asarray(x_BxT)
    return np.pad(x_BxT, ((0, 0), (T - x_BxT.shape[1], 0)), constant_values=value)


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
        verdicts=[r.verdicts[i] for i in idx],
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


def split_rows(batch: state_lib.TrainBatch, n: int) -> list[state_lib.TrainBatch]:
    """`n` mini-batches, row i going to mini-batch i % n.

    Strided rather than contiguous, so that when each process splits its own rows, the union over
    processes of mini-batch u is the same rows as one process splitting the global batch (given
    rows per process divisible by n): results do not depend on the process count.
    """
    return [jax.tree.map(lambda x, u=u: x[u::n], batch) for u in range(n)]


def pad_rows(batch: state_lib.TrainBatch, rows: int) -> state_lib.TrainBatch:
    """The batch with empty rows appended up to `rows`: no prompt or completion tokens, zero
    advantage. The train step's loss, gradient and metrics ignore them (see step.train_step)."""
    extra = rows - batch.completion_BxTc.shape[0]
    if extra < 0:
        raise ValueError(f"cannot pad {batch.completion_BxTc.shape[0]} rows down to {rows}")
    return jax.tree.map(
        lambda x: np.concatenate([x, np.zeros((extra, *x.shape[1:]), x.dtype)]), batch
    )
