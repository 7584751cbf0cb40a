"""Supervised warm start: a few steps of cross-entropy on worked solutions before RL.

The tiny default starts from random weights; RL needs a policy that is sometimes right, so the same
command first fits the worked solutions of the training split for a fixed number of steps.
Deterministic for a seed, so a resumed run that needs the warm-start weights again gets them
bitwise. On a mesh, every process builds the same global batch and places only its devices' rows.
"""

# pylint: disable=invalid-name
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import Mesh

from rlvr_jax import distributed, sampling
from rlvr_jax import mesh as mesh_lib
from rlvr_jax.data import synthetic
from rlvr_jax.data import types as data_types
from rlvr_jax.models import config as config_lib
from rlvr_jax.models import params as params_lib
from rlvr_jax.models import tokenizer as tokenizer_lib
from rlvr_jax.objectives import batch as batch_lib
from rlvr_jax.rollout import multi_turn
from rlvr_jax.rollout import types as rollout_types
from rlvr_jax.train import state as state_lib
from rlvr_jax.train import step as step_lib


@dataclasses.dataclass(frozen=True, kw_only=True)
class WarmStartConfig:
    steps: int = 0  # SFT steps; 0 disables
    batch_size: int = 32  # examples per step
    lr: float = 1e-3
    warmup_steps: int = 10
    # Noise in the worked solutions (synthetic data only; data.synthetic.noisy_solutions): the
    # share that stops without a final answer, and the share of the rest with an arithmetic slip.
    unanswered_frac: float = 0.0
    slip_frac: float = 0.0
    # True: each step's rows come from one group of similar lengths, padded to that group's
    # bucket pair (`length_groups`), instead of every step padded to the longest row.
    group_by_length: bool = False


@dataclasses.dataclass(frozen=True)
class SFTRow:
    """One supervised sequence as tokens: the prompt, then the completion, of which the tokens in
    `loss_mask` are trained on (the rest, e.g. a multi-turn episode's observations, is context)."""

    prompt: list[int]
    completion: list[int]
    loss_mask: list[bool] | None = None  # None: every completion token


def rows_of(
    tok: tokenizer_lib.Tokenizer, examples: Sequence[data_types.Example], system: str | None
) -> list[SFTRow]:
    """Prompt (chat template) -> worked solution (or the answer) + EOS."""
    return [
        SFTRow(
            tok.apply_chat_template(ex.prompt, system=system),
            tok.encode(ex.solution or ex.answer) + [tok.eos_ids[0]],
        )
        for ex in examples
    ]


def sft_batch(rows: Sequence[SFTRow], pad_id: int, shape: tuple[int, int]) -> batch_lib.TrainBatch:
    """Prompts left padded to Tp, completions right padded to Tc (`shape`, see `sft_shape`)."""
    Tp, Tc = shape
    B = len(rows)
    prompt_BxTp = np.full((B, Tp), pad_id, np.int32)
    prompt_mask = np.zeros((B, Tp), bool)
    comp_BxTc = np.full((B, Tc), pad_id, np.int32)
    comp_mask = np.zeros((B, Tc), bool)
    context = np.zeros((B, Tc), bool)
    for i, row in enumerate(rows):
        p, t = row.prompt, row.completion
        prompt_BxTp[i, Tp - len(p) :], prompt_mask[i, Tp - len(p) :] = p, True
        comp_BxTc[i, : len(t)] = t
        loss = np.ones(len(t), bool) if row.loss_mask is None else np.asarray(row.loss_mask, bool)
        comp_mask[i, : len(t)], context[i, : len(t)] = loss, ~loss
    zeros = np.zeros((B, Tc), np.float32)
    return batch_lib.TrainBatch(
        prompt_BxTp=prompt_BxTp,
        prompt_mask_BxTp=prompt_mask,
        completion_BxTc=comp_BxTc,
        completion_mask_BxTc=comp_mask,
        old_logps_BxTc=zeros,
        adv_BxTc=zeros,
        context_mask_BxTc=context if context.any() else None,
    )


def sft_shape(
    rows: Sequence[SFTRow], buckets: Sequence[int] = sampling.DEFAULT_BUCKETS
) -> tuple[int, int]:
    """(Tp, Tc) that fits every row: one shape for every warm-start step, so the step compiles
    once rather than once per bucket pair that a random batch happens to need."""
    Tp = sampling.bucket(max(len(r.prompt) for r in rows), buckets, "prompt")
    return Tp, sampling.bucket(max(len(r.completion) for r in rows), buckets, "solution")


def length_groups(
    rows: Sequence[SFTRow], buckets: Sequence[int], batch_size: int
) -> list[tuple[tuple[int, int], list[int]]]:
    """Row indices grouped by their own (prompt, completion) bucket pair, as [(shape, indices)].

    A group with fewer than `batch_size` rows joins the next larger one (in padded tokens), which
    pads to the elementwise max of the two shapes; so a step compiles once per group, and a batch
    drawn from one group pads each row to at most its group's shape.
    """
    by_shape: dict[tuple[int, int], list[int]] = {}
    for i, r in enumerate(rows):
        key = (
            sampling.bucket(len(r.prompt), buckets, "prompt"),
            sampling.bucket(len(r.completion), buckets, "solution"),
        )
        by_shape.setdefault(key, []).append(i)
    groups: list[tuple[tuple[int, int], list[int]]] = []
    carry_shape, carry = (0, 0), []
    for shape in sorted(by_shape, key=lambda s: (s[0] + s[1], s)):
        carry_shape = (max(carry_shape[0], shape[0]), max(carry_shape[1], shape[1]))
        carry = carry + by_shape[shape]
        if len(carry) >= batch_size:
            groups.append((carry_shape, carry))
            carry_shape, carry = (0, 0), []
    if carry:  # the longest rows, too few for a batch: into the last group
        if not groups:
            return [(carry_shape, carry)]
        shape, idx = groups.pop()
        groups.append(((max(shape[0], carry_shape[0]), max(shape[1], carry_shape[1])), idx + carry))
    return groups


def draw(
    groups: Sequence[tuple[tuple[int, int], list[int]]], batch_size: int, rng: np.random.Generator
) -> tuple[tuple[int, int], np.ndarray]:
    """One step's (shape, row indices): a group drawn in proportion to its rows (so every row is
    as likely as without groups), then `batch_size` distinct rows of it."""
    g = 0
    if len(groups) > 1:
        sizes = np.asarray([len(idx) for _, idx in groups], np.float64)
        g = int(rng.choice(len(groups), p=sizes / sizes.sum()))
    shape, members = groups[g]
    return shape, rng.choice(members, size=batch_size, replace=False)


def run(
    params: params_lib.Params,
    tok: tokenizer_lib.Tokenizer,
    examples: Sequence[data_types.Example],
    *,
    cfg: WarmStartConfig,
    model_cfg: config_lib.ModelConfig,
    system: str | None,
    seed: int,
    mesh: Mesh | None = None,
    log_every: int = 50,
    rows: Sequence[SFTRow | tuple] | None = None,
) -> tuple[params_lib.Params, list[float]]:
    """Returns the warm-started params and the loss of every step: on the examples' worked
    solutions, or on `rows` when given (a task's own token sequences, e.g. expert episodes).

    With a `mesh`, `params` must live on it; they are donated (the caller must not reuse them).
    """
    if cfg.steps <= 0:
        return params, []
    if rows is None:
        if cfg.slip_frac > 0 or cfg.unanswered_frac > 0:
            examples = synthetic.noisy_solutions(
                list(examples),
                slip_frac=cfg.slip_frac,
                unanswered_frac=cfg.unanswered_frac,
                seed=seed,
            )
        rows = rows_of(tok, examples, system)
        buckets = sampling.DEFAULT_BUCKETS
    else:  # a task's own sequences (multi-turn episodes) pad as its rollouts do
        buckets = multi_turn.BUCKETS
    rows = [r if isinstance(r, SFTRow) else SFTRow(*r) for r in rows]
    if cfg.batch_size > len(rows):
        raise ValueError(
            f"warm_start.batch_size={cfg.batch_size} exceeds the {len(rows)} warm-start sequences"
        )
    opt = state_lib.make_optimizer(
        state_lib.OptConfig(
            lr=cfg.lr,
            schedule="cosine",
            warmup_steps=cfg.warmup_steps,
            total_steps=cfg.steps,
        )
    )
    if mesh is None:
        state = state_lib.init_state(params, opt)
        shardings = None
    else:
        shardings = state_lib.state_shardings(jax.tree.map(lambda x: x.sharding, params), opt)
        state = state_lib.make_init_state(opt, shardings)(params)
    step = step_lib.make_sft_step(model_cfg=model_cfg, optimizer=opt, shardings=shardings)
    if mesh is not None:
        shards, row_shd = mesh_lib.batch_size_of(mesh), mesh_lib.batch_sharding(mesh)
    if cfg.group_by_length:
        groups = length_groups(rows, buckets, cfg.batch_size)
    else:
        groups = [(sft_shape(rows, buckets), list(range(len(rows))))]
    rng = np.random.default_rng(seed)
    losses = []
    for i in range(cfg.steps):
        shape, idx = draw(groups, cfg.batch_size, rng)
        batch = sft_batch([rows[j] for j in idx], tok.pad_id, shape)
        if mesh is not None:
            # Empty rows up to a multiple of the batch shards: the loss is a token mean, so they
            # change nothing.
            batch = rollout_types.pad_rows(batch, -(-cfg.batch_size // shards) * shards)
            batch = distributed.place(batch, jax.tree.map(lambda _: row_shd, batch))
        state, metrics = step(state, batch)
        losses.append(float(jax.device_get(metrics["warm/loss"])))
        if log_every and (i + 1) % log_every == 0:
            mean = float(np.mean(losses[-log_every:]))
            print(
                f"warm start {i + 1}/{cfg.steps}: loss {mean:.3f} (mean of the last {log_every})",
                flush=True,
            )
    return state.params, losses
