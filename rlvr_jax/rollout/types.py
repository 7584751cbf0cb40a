"""The rollout seam: what any rollout engine returns, and the batch operations on it.

A `Rollout` holds, per row: the token ids the policy produced (`sample.tokens_BxTc`), the loss
mask (`loss_mask_BxTc`: the tokens that carry loss; an engine that interleaves environment or tool
tokens leaves those out), the sampler's log-probs (`sample.logps_BxTc`), the stop reason
(`stop_B`), the decoded text and the task's verdict. Rows are group-major: rows p*G .. p*G+G-1
are the G samples of prompt p. On a mesh, each process samples and scores its own prompts: their
rows become its block of one global batch (rlvr_jax/distributed.py).

Engines: `single_turn` (one completion per row from the jitted KV-cache sampler or the
continuous-batching engine) and `multi_turn` (episodes against environments on the engine's
slots: the completion interleaves the policy's turns with the environments' observations).
"""

# pylint: disable=invalid-name
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import jax
import numpy as np

from rlvr_jax import sampling
from rlvr_jax.data import types as data_types
from rlvr_jax.objectives import batch as batch_lib

# texts, examples (one per text) -> verdicts with .reward, .correct, .status, .verifier_error
ScoreFn = Callable[[list[str], list[data_types.Example]], list]
# Why a row ended: on a stop token, or at the token budget (more with multi-turn engines).
STOP_REASONS = ("stop", "length")


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
    # Multi-turn: the completion tokens the policy sampled (the rest of `sample.mask_BxTc` is the
    # environments' observations: context, no loss). None: every completion token is sampled.
    policy_mask_BxTc: np.ndarray | None = None

    @property
    def statuses(self) -> list[str]:
        return [v.status for v in self.verdicts]

    @property
    def loss_mask_BxTc(self) -> np.ndarray:
        """The tokens that carry loss: every sampled token up to and including the stop token."""
        if self.policy_mask_BxTc is not None:
            return np.asarray(self.policy_mask_BxTc, bool)
        return np.asarray(self.sample.mask_BxTc, bool)

    @property
    def context_mask_BxTc(self) -> np.ndarray | None:
        """Completion tokens that are context only (observations), or None (single-turn)."""
        if self.policy_mask_BxTc is None:
            return None
        return np.asarray(self.sample.mask_BxTc, bool) & ~self.loss_mask_BxTc

    @property
    def stop_B(self) -> np.ndarray:
        """Index into STOP_REASONS per row."""
        return np.where(np.asarray(self.sample.stopped_B), 0, 1).astype(np.int32)


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


def metrics(stats: dict[str, np.ndarray], G: int) -> dict[str, float]:
    """Rollout metrics of the per-row `stats` (gathered over every process)."""
    rewards_B, lengths_B = stats["rewards"], stats["lengths"]
    rewards_PxG = rewards_B.reshape(-1, G)
    return {
        "rollout/reward_mean": float(rewards_B.mean()),
        "rollout/reward_std": float(rewards_B.std()),
        "rollout/acc": float(stats["correct"].mean()),
        "rollout/len_mean": float(lengths_B.mean()),
        "rollout/len_max": float(lengths_B.max()) if len(lengths_B) else 0.0,
        "rollout/truncated_frac": float(1.0 - stats["stopped"].mean()),
        "rollout/frac_zero_std_groups": float((rewards_PxG.std(axis=1) == 0).mean()),
        "rollout/no_answer_frac": float(stats["no_answer"].mean()),
        "rollout/verifier_error_frac": float(stats["verifier_error"].mean()),
        "rollout/prompts": float(len(rewards_B) // G),
    }


def concat(rollouts: Sequence[Rollout]) -> Rollout:
    """Rollouts of the same buckets stacked along the batch."""
    if len(rollouts) == 1:
        return rollouts[0]
    Tp = max(r.sample.prompt_BxTp.shape[1] for r in rollouts)
    samples = [_left_pad_prompt(r.sample, Tp) for r in rollouts]
    Tc = max(r.sample.tokens_BxTc.shape[1] for r in rollouts)
    samples = [_right_pad_completion(s, Tc) for s in samples]
    sample_out = jax.tree.map(lambda *xs: np.concatenate(xs, axis=0), *samples)
    policy = None
    if any(r.policy_mask_BxTc is not None for r in rollouts):
        policy = np.concatenate([right_pad(r.loss_mask_BxTc, Tc, False) for r in rollouts])
    return Rollout(
        examples=[e for r in rollouts for e in r.examples],
        sample=sample_out,
        texts=[t for r in rollouts for t in r.texts],
        rewards_B=np.concatenate([r.rewards_B for r in rollouts]),
        correct_B=np.concatenate([r.correct_B for r in rollouts]),
        verdicts=[v for r in rollouts for v in r.verdicts],
        policy_mask_BxTc=policy,
    )


def _right_pad_completion(s: sampling.SampleOutput, Tc: int) -> sampling.SampleOutput:
    """The same rollout with its completions right-padded to Tc (masked; pad id 0)."""
    if Tc == s.tokens_BxTc.shape[1]:
        return s
    return s.replace(
        tokens_BxTc=right_pad(s.tokens_BxTc, Tc, 0),
        mask_BxTc=right_pad(s.mask_BxTc, Tc, False),
        logps_BxTc=right_pad(s.logps_BxTc, Tc, 0.0),
        certainty_BxTc=right_pad(s.certainty_BxTc, Tc, 0.0),
    )


def right_pad(x_BxT: np.ndarray, T: int, value) -> np.ndarray:
    x_BxT = np.asarray(x_BxT)
    return np.pad(x_BxT, ((0, 0), (0, T - x_BxT.shape[1])), constant_values=value)


def _left_pad_prompt(s: sampling.SampleOutput, Tp: int) -> sampling.SampleOutput:
    """The same rollout with its prompts left-padded to Tp (masked padding)."""
    if Tp == s.prompt_BxTp.shape[1]:
        return s
    return s.replace(
        prompt_BxTp=left_pad(s.prompt_BxTp, Tp, 0),
        prompt_mask_BxTp=left_pad(s.prompt_mask_BxTp, Tp, False),
    )


def left_pad(x_BxT: np.ndarray, T: int, value) -> np.ndarray:
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
        policy_mask_BxTc=None if r.policy_mask_BxTc is None else r.policy_mask_BxTc[idx],
    )


def to_batch(
    r: Rollout, adv_B: np.ndarray, ref_logps_BxTc: np.ndarray | None = None
) -> batch_lib.TrainBatch:
    """The TrainBatch of a rollout: per-sequence advantages broadcast over completion tokens."""
    s = r.sample
    mask_BxTc = r.loss_mask_BxTc
    adv_BxTc = np.where(mask_BxTc, np.asarray(adv_B, np.float32)[:, None], 0.0).astype(np.float32)
    return batch_lib.TrainBatch(
        prompt_BxTp=np.asarray(s.prompt_BxTp, np.int32),
        prompt_mask_BxTp=np.asarray(s.prompt_mask_BxTp, bool),
        completion_BxTc=np.asarray(s.tokens_BxTc, np.int32),
        completion_mask_BxTc=mask_BxTc,
        old_logps_BxTc=np.asarray(s.logps_BxTc, np.float32),
        adv_BxTc=adv_BxTc,
        ref_logps_BxTc=ref_logps_BxTc,
        context_mask_BxTc=r.context_mask_BxTc,
    )


def split_rows(batch: batch_lib.TrainBatch, n: int) -> list[batch_lib.TrainBatch]:
    """`n` mini-batches, row i going to mini-batch i % n.

    Strided rather than contiguous, so that when each process splits its own rows, the union over
    processes of mini-batch u is the same rows as one process splitting the global batch (given
    rows per process divisible by n): results do not depend on the process count.
    """
    return [jax.tree.map(lambda x, u=u: x[u::n], batch) for u in range(n)]


def pad_rows(batch: batch_lib.TrainBatch, rows: int) -> batch_lib.TrainBatch:
    """The batch with empty rows appended up to `rows`: no prompt or completion tokens, zero
    advantage. The train step's loss, gradient and metrics ignore them (see step.train_step)."""
    extra = rows - batch.completion_BxTc.shape[0]
    if extra < 0:
        raise ValueError(f"cannot pad {batch.completion_BxTc.shape[0]} rows down to {rows}")
    return jax.tree.map(
        lambda x: np.concatenate([x, np.zeros((extra, *x.shape[1:]), x.dtype)]), batch
    )
