"""The loop's side of the research objectives (RESEARCH.md 2, 4, 5): typed configs from the
experiment's ConfigDict, the OPD teacher, the TOPD/POPD rollout horizon, OPD advantages and DistIL's
feedback-conditioned teacher targets. DelTA needs nothing here beyond its config: the train step
computes its coefficients (train/step.py).
"""

# pylint: disable=invalid-name
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh

from rlvr_jax import mesh as mesh_lib
from rlvr_jax import sampling
from rlvr_jax.data import feedback as feedback_lib
from rlvr_jax.models import config as config_lib
from rlvr_jax.models import hf
from rlvr_jax.models import params as params_lib
from rlvr_jax.models import tokenizer as tokenizer_lib
from rlvr_jax.objectives import delta as delta_lib
from rlvr_jax.objectives import distil as distil_lib
from rlvr_jax.objectives import opd as opd_lib
from rlvr_jax.train import distributed
from rlvr_jax.train import rollout as rollout_lib
from rlvr_jax.train import setup as setup_lib
from rlvr_jax.train import state as state_lib
from rlvr_jax.train import step as step_lib


class ResearchConfigError(setup_lib.ConfigError):
    """A research-objective config value that cannot work, named by its key."""


@dataclasses.dataclass(frozen=True)
class ResearchConfigs:
    delta: delta_lib.DeltaConfig
    opd: opd_lib.OPDConfig
    distil: distil_lib.DistilConfig
    opd_teacher: str  # HF folder of the OPD teacher
    distil_teacher: str  # HF folder when distil.teacher == "model"


def configs(c: ml_collections.ConfigDict, *, loss_agg: str, num_updates: int, micro: int):
    """The typed research configs of `c` (sections delta / opd / distil; absent ones are off)."""

    def section(name, cls, drop=()):
        raw = dict(c.get(name, {}))
        try:
            return cls(**{k: v for k, v in raw.items() if k not in drop}), raw
        except (TypeError, ValueError) as e:
            raise ResearchConfigError(f"{name}: {e}") from None

    delta, _ = section("delta", delta_lib.DeltaConfig)
    opd, opd_raw = section("opd", opd_lib.OPDConfig, drop=("teacher",))
    distil, distil_raw = section("distil", distil_lib.DistilConfig, drop=("teacher_path",))
    out = ResearchConfigs(
        delta=delta,
        opd=opd,
        distil=distil,
        opd_teacher=opd_raw.get("teacher", ""),
        distil_teacher=distil_raw.get("teacher_path", ""),
    )
    if delta.enabled and loss_agg != "token_mean":
        raise ResearchConfigError(
            f"delta.enabled needs rl.loss_agg='token_mean' (RESEARCH.md 2), got {loss_agg!r}"
        )
    if opd.enabled and not out.opd_teacher:
        raise ResearchConfigError("opd.enabled needs opd.teacher, an HF checkpoint folder")
    if opd.enabled and distil.enabled:
        raise ResearchConfigError("opd.enabled and distil.enabled: pick one teacher objective")
    if distil.enabled and distil.teacher == "model" and not out.distil_teacher:
        raise ResearchConfigError("distil.teacher='model' needs distil.teacher_path")
    if distil.enabled and distil.sequence_term and (num_updates > 1 or micro > 1):
        raise ResearchConfigError(
            "distil.sequence_term needs whole groups in one micro-batch: "
            "rl.num_updates=1 and train.micro_batches=1"
        )
    return out


@dataclasses.dataclass(frozen=True)
class Teacher:
    """A frozen model that scores the student's samples, on the training mesh."""

    model_cfg: config_lib.ModelConfig
    params: params_lib.Params


def load_teacher(
    folder: str, student_cfg: config_lib.ModelConfig, tok: tokenizer_lib.Tokenizer, mesh: Mesh
) -> Teacher:
    """The HF checkpoint in `folder`, placed shard by shard; its tokenizer must be the student's."""
    try:
        cfg = config_lib.read_hf_config(
            folder,
            param_dtype=student_cfg.param_dtype,
            compute_dtype=student_cfg.compute_dtype,
        )
        teacher_tok = tokenizer_lib.load_tokenizer(folder)
    except Exception as e:  # noqa: BLE001  (tokenizers raises plain Exception on a bad file)
        raise ResearchConfigError(f"teacher {folder}: cannot load it: {e}") from None
    probe = "Compute 12 + 34 = 46. \\boxed{46}"
    if (
        teacher_tok.hf.get_vocab() != tok.hf.get_vocab()
        or teacher_tok.encode(probe) != tok.encode(probe)
        or cfg.vocab_size < tok.vocab_size
    ):
        raise ResearchConfigError(
            f"teacher {folder}: its tokenizer differs from the student's (OPD and DistIL compare "
            "log-probs token by token, so both must share one vocabulary)"
        )
    shardings = mesh_lib.param_shardings(mesh, params_lib.param_axes(cfg))
    return Teacher(model_cfg=cfg, params=hf.load_params(folder, cfg, shardings=shardings))


def rollout_sampling(
    cfg: sampling.SamplingConfig, opd: opd_lib.OPDConfig, step: int
) -> sampling.SamplingConfig:
    """The sampler config of RL step `step` (1-based): TOPD/POPD shorten the horizon."""
    if not opd.enabled:
        return cfg
    horizon = opd_lib.horizon_tokens(opd, step - 1, cfg.max_new_tokens)
    return dataclasses.replace(cfg, max_new_tokens=horizon)


def opd_advantages(
    part: state_lib.TrainBatch, teacher: Teacher, logps_fn, opd: opd_lib.OPDConfig
) -> tuple[state_lib.TrainBatch, dict[str, jax.Array]]:
    """The mini-batch with OPD's per-token advantage (optionally mixed with its GRPO advantage),
    and the teacher-student reverse-KL estimate on the sampled tokens."""
    teacher_logps_BxTc = logps_fn(
        teacher.params,
        part.prompt_BxTp,
        part.prompt_mask_BxTp,
        part.completion_BxTc,
        part.completion_mask_BxTc,
    )
    mask = part.completion_mask_BxTc
    grpo_B = step_lib.sequence_advantages(part.adv_BxTc, mask) if opd.mix_grpo else None
    adv_BxTc = opd_lib.compute(opd, part.old_logps_BxTc, teacher_logps_BxTc, mask, grpo_B)
    count = jax.numpy.maximum(jax.numpy.sum(mask), 1)
    rkl = jax.numpy.sum(jax.numpy.where(mask, part.old_logps_BxTc - teacher_logps_BxTc, 0.0))
    return part.replace(adv_BxTc=adv_BxTc), {"opd/reverse_kl": rkl / count}


def distil_targets(
    r: rollout_lib.Rollout,
    batch: state_lib.TrainBatch,
    *,
    tok: tokenizer_lib.Tokenizer,
    system: str | None,
    G: int,
    cfg: distil_lib.DistilConfig,
    topk_fn,
    teacher_params: params_lib.Params,
    sampling_cfg: sampling.SamplingConfig,
    mesh: Mesh,
) -> tuple[state_lib.TrainBatch, list[str]]:
    """This process's batch with the teacher's top-k targets: the teacher reads each rollout's
    prompt plus its feedback (RESEARCH.md 5), then the student's completion. Returns the
    feedback strings too (logged as examples)."""
    texts: list[str] = []
    prompts: list[list[int]] = []
    for p, ex in enumerate(r.examples):
        rows = slice(p * G, (p + 1) * G)
        fbs = feedback_lib.group_feedback(cfg.feedback, ex, r.texts[rows], r.correct_B[rows])
        for fb in fbs:
            texts.append(fb)
            prompt = feedback_lib.feedback_prompt(ex.prompt, fb)
            prompts.append(tok.apply_chat_template(prompt, system=system))
    fb_BxTf, fb_mask_BxTf = sampling.pad_prompts(prompts, sampling_cfg)
    n = len(prompts)
    rows = -(-n // distributed.local_shards(mesh)) * distributed.local_shards(mesh)
    pad = lambda x: np.concatenate([x, np.repeat(x[-1:], rows - n, axis=0)])
    args = [
        pad(x) for x in (fb_BxTf, fb_mask_BxTf, batch.completion_BxTc, batch.completion_mask_BxTc)
    ]
    ids, probs = distributed.local_rows(
        topk_fn(teacher_params, *distributed.global_rows(args, mesh)), mesh
    )
    ids, probs = np.asarray(ids)[:n], np.asarray(probs)[:n]
    return batch.replace(teacher_ids_BxTcxK=ids, teacher_probs_BxTcxK=probs), texts


def make_topk_fn(model_cfg, temperature: float, k: int, param_shardings) -> callable:
    """Jitted teacher top-k (ids, renormalised probs) [B, Tc, k] at the completion positions."""

    def topk(params, prompt_BxTp, prompt_mask_BxTp, completion_BxTc, completion_mask_BxTc):
        fwd = step_lib.completion_forward(
            params,
            prompt_BxTp,
            prompt_mask_BxTp,
            completion_BxTc,
            completion_mask_BxTc,
            model_cfg=model_cfg,
            temperature=temperature,
        )
        return distil_lib.topk_teacher(fwd.logits_BxTcxV, k)

    rows = mesh_lib.batch_sharding(jax.tree.leaves(param_shardings)[0].mesh)
    return jax.jit(topk, in_shardings=(param_shardings, *[rows] * 4), out_shardings=(rows, rows))


def feedback_examples(texts: Sequence[str], limit: int = 2) -> str:
    return " | ".join(t[:120] for t in texts[:limit])
