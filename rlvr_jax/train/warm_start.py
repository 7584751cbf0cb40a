"""Supervised warm start: a few steps of cross-entropy on worked solutions before RL.

The tiny default starts from random weights; RL needs a policy that is sometimes right, so the same
command first fits the worked solutions of the training split for a fixed number of steps.
Deterministic for a seed, so a resumed run that needs the warm-start weights again gets them
bitwise.
"""

# pylint: disable=invalid-name
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import numpy as np

from rlvr_jax import sampling
from rlvr_jax.data import synthetic
from rlvr_jax.data import types as data_types
from rlvr_jax.models import config as config_lib
from rlvr_jax.models import params as params_lib
from rlvr_jax.models import tokenizer as tokenizer_lib
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


def sft_batch(
    tok: tokenizer_lib.Tokenizer,
    examples: Sequence[data_types.Example],
    system: str | None,
    buckets: Sequence[int] = sampling.DEFAULT_BUCKETS,
) -> state_lib.TrainBatch:
    """Prompt (chat template, left padded) -> solution + EOS (right padded), padded to buckets."""
    prompts = [tok.apply_chat_template(ex.prompt, system=system) for ex in examples]
    targets = [tok.encode(ex.solution or ex.answer) + [tok.eos_ids[0]] for ex in examples]
    Tp = sampling.bucket(max(map(len, prompts)), buckets, "prompt")
    Tc = sampling.bucket(max(map(len, targets)), buckets, "solution")
    B = len(examples)
    prompt_BxTp = np.full((B, Tp), tok.pad_id, np.int32)
    prompt_mask = np.zeros((B, Tp), bool)
    comp_BxTc = np.full((B, Tc), tok.pad_id, np.int32)
    comp_mask = np.zeros((B, Tc), bool)
    for i, (p, t) in enumerate(zip(prompts, targets, strict=True)):
        prompt_BxTp[i, Tp - len(p) :], prompt_mask[i, Tp - len(p) :] = p, True
        comp_BxTc[i, : len(t)], comp_mask[i, : len(t)] = t, True
    zeros = np.zeros((B, Tc), np.float32)
    return state_lib.TrainBatch(
        prompt_BxTp=prompt_BxTp,
        prompt_mask_BxTp=prompt_mask,
        completion_BxTc=comp_BxTc,
        completion_mask_BxTc=comp_mask,
        old_logps_BxTc=zeros,
        adv_BxTc=zeros,
    )


def run(
    params: params_lib.Params,
    tok: tokenizer_lib.Tokenizer,
    examples: Sequence[data_types.Example],
    *,
    cfg: WarmStartConfig,
    model_cfg: config_lib.ModelConfig,
    system: str | None,
    seed: int,
    log_every: int = 50,
) -> tuple[params_lib.Params, list[float]]:
    """Returns the warm-started params and the loss of every step."""
    if cfg.steps <= 0:
        return params, []
    if cfg.slip_frac > 0 or cfg.unanswered_frac > 0:
        examples = synthetic.noisy_solutions(
            list(examples), slip_frac=cfg.slip_frac, unanswered_frac=cfg.unanswered_frac, seed=seed
        )
    opt = state_lib.make_optimizer(
        state_lib.OptConfig(
            lr=cfg.lr,
            schedule="cosine",
            warmup_steps=cfg.warmup_steps,
            total_steps=cfg.steps,
        )
    )
    state = state_lib.init_state(params, opt)
    step = step_lib.make_sft_step(model_cfg=model_cfg, optimizer=opt)
    rng = np.random.default_rng(seed)
    losses = []
    for i in range(cfg.steps):
        idx = rng.choice(len(examples), size=cfg.batch_size, replace=False)
        batch = sft_batch(tok, [examples[j] for j in idx], system)
        state, metrics = step(state, batch)
        losses.append(float(jax.device_get(metrics["warm/loss"])))
        if log_every and (i + 1) % log_every == 0:
            print(f"warm start {i + 1}/{cfg.steps}: loss {losses[-1]:.3f}", flush=True)
    return state.params, losses
