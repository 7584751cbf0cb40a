"""The loop's side of the research objectives (docs/delta.md, docs/opd.md, docs/distil.md):
typed configs from the experiment's ConfigDict, the OPD teacher, the TOPD/POPD rollout
horizon, OPD advantages and DistIL's feedback-conditioned teacher targets. DelTA needs nothing
here beyond its config: the train step computes its coefficients (train/step.py).
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
from rlvr_jax.objectives import rlif as rlif_lib
from rlvr_jax.rewards import math as math_lib
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
    rlif: rlif_lib.RLIFConfig | None  # label-free rewards; None: the verifier's reward


def configs(c: ml_collections.ConfigDict, rl, *, micro: int):
    """The typed research configs of `c` (sections delta / opd / distil / rlif; absent: off)."""
    loss_agg, num_updates = rl.loss_agg, rl.num_updates

    def section(name, cls, drop=()):
        raw = dict(c.get(name, {}))
        try:
            return cls(**{k: v for k, v in raw.items() if k not in drop}), raw
        except (TypeError, ValueError) as e:
            raise ResearchConfigError(f"{name}: {e}") from None

    delta, _ = section("delta", delta_lib.DeltaConfig)
    opd, opd_raw = section("opd", opd_lib.OPDConfig, drop=("teacher",))
    distil, distil_raw = section("distil", distil_lib.DistilConfig, drop=("teacher_path",))
    moved = sorted({"kl_cov", "kl_cov_k_frac", "kl_cov_coef"} & set(c.get("rlif", {})))
    if moved:  # KL-Cov became a policy-loss mode of every objective
        raise ResearchConfigError(
            f"rlif.{moved[0]} is gone: KL-Cov is rl.policy_loss='kl_cov' with rl.kl_cov_ratio "
            "and rl.kl_cov_coef (docs/rlif.md)"
        )
    rlif, rlif_raw = section("rlif", rlif_lib.RLIFConfig, drop=("enabled",))
    out = ResearchConfigs(
        delta=delta,
        opd=opd,
        distil=distil,
        opd_teacher=opd_raw.get("teacher", ""),
        distil_teacher=distil_raw.get("teacher_path", ""),
        rlif=rlif if rlif_raw.get("enabled", False) else None,
    )
    if out.rlif is not None and (opd.enabled or distil.enabled):
        raise ResearchConfigError("rlif.enabled with opd/distil: pick one training signal")
    if out.rlif is not None and (rl.dynamic_sampling or rl.overlong_penalty):
        raise ResearchConfigError(
            "rlif.enabled with rl.dynamic_sampling or rl.overlong_penalty: both act on the "
            "verifier's reward, which label-free training must not read"
        )
    if delta.enabled and loss_agg != "token_mean":
        raise ResearchConfigError(
            f"delta.enabled needs rl.loss_agg='token_mean' (docs/delta.md), got {loss_agg!r}"
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
    prompt plus its feedback (docs/distil.md), then the student's completion. Returns the
    feedback strings too (logged as examples)."""
    texts: list[str] = []
    prompts: list[list[int]] = []
    for p, ex in enumerate(r.examples):
        rows = slice(p * G, (p + 1) * G)
        fbs = feedback_lib.group_feedback(
            cfg.feedback, ex, r.texts[rows], r.correct_B[rows], r.verdicts[rows]
        )
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


def make_topk_fn(model_cfg, temperature: float, k: int, param_shardings):
    """Jitted teacher top-k (ids, renormalised probs) [B, Tc, k] at the completion positions."""
    return step_lib.make_completion_fn(
        lambda fwd: distil_lib.topk_teacher(fwd.logits_BxTcxV, k),
        model_cfg=model_cfg,
        temperature=temperature,
        param_shardings=param_shardings,
    )


def feedback_examples(texts: Sequence[str], limit: int = 2) -> str:
    return " | ".join(t[:120] for t in texts[:limit])


def _same_answer(a: str, b: str) -> bool:
    """Math equivalence of two extracted answers (the verifier's rules, either as reference)."""
    return math_lib.score_math(f"\\boxed{{{a}}}", b).status == "correct"


def rlif_advantages(
    r: rollout_lib.Rollout, cfg: rlif_lib.RLIFConfig, G: int
) -> tuple[np.ndarray, dict[str, float]]:
    """Label-free advantages (docs/rlif.md): each completion's rewards from the group alone
    (cluster vote over math-equivalent final answers; the sampler's self-certainty), combined
    by GDPO over the global batch (every process's rows). No reference answer is read. Returns
    (this process's adv_B, metrics)."""
    columns, metrics = [], {}
    texts = r.texts
    if "cluster_vote" in cfg.rewards:
        answers = [math_lib.extract_answer(t) for t in texts]
        _, majority_B, soft_B = rlif_lib.cluster_votes(answers, _same_answer, G, cfg.tie_break)
        vote_B = soft_B if cfg.soft_share else majority_B
        metrics["rlif/vote_reward"] = float(np.mean(vote_B))
        metrics["rlif/no_answer_frac"] = float(np.mean([a is None for a in answers]))
        # How often the majority is right: read only for this metric, never for training.
        metrics["rlif/vote_precision"] = float(
            np.sum(vote_B * r.correct_B) / max(np.sum(vote_B), 1e-9)
        )
    if "self_certainty" in cfg.rewards:
        mask = np.asarray(r.sample.mask_BxTc, bool)
        cert = np.asarray(r.sample.certainty_BxTc, np.float32)
        sc_B = (cert * mask).sum(1) / np.maximum(mask.sum(1), 1)
        metrics["rlif/self_certainty"] = float(np.mean(sc_B))
    by_name = {"cluster_vote": lambda: vote_B, "self_certainty": lambda: sc_B}
    columns = [by_name[name]() for name in cfg.rewards]
    rewards_BxR = np.stack(columns, axis=1).astype(np.float32)
    # GDPO's batch statistics span the global batch: gather every process's rows (whole groups,
    # so the group statistics are unchanged), then keep this process's block.
    counts = distributed.gather_rows(np.asarray([len(rewards_BxR)], np.int64))
    start = int(counts[: jax.process_index()].sum())
    all_BxR = distributed.gather_rows(rewards_BxR)
    adv_B = rlif_lib.gdpo_advantages(all_BxR, cfg.weights, G, cfg.adv_eps, cfg.adv_std_ddof)
    return np.asarray(adv_B, np.float32)[start : start + len(rewards_BxR)], metrics
