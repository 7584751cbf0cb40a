"""GRPO on math word problems: the embedded tiny task on a CPU, or a real checkpoint and data files.

Run:    python experiments/grpo_math.py --workdir=/tmp/grpo_tiny
        python experiments/grpo_math.py --workdir=DIR \
            --config=experiments/configs/grpo_math.py:qwen2p5_math_1p5b \
            --config.model.init_from=/ckpt/Qwen2.5-Math-1.5B \
            --config.data.train_files='("/data/gsm8k/train.jsonl",)' \
            --config.data.eval_files='("/data/gsm8k/test.jsonl",)'
Presets: tiny (default; CPU, embedded synthetic task, supervised warm start in the same command),
         qwen2p5_math_1p5b, qwen3_8b_base (HF folder and data files given by flags).
Expect:  tiny: see README (held-out accuracy before/after, wall time).
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from experiments.configs import common

PRESETS = ("tiny", "qwen2p5_math_1p5b", "qwen3_8b_base")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = common.parse_arg(arg, preset="tiny")
    if arg["preset"] not in PRESETS:
        raise ValueError(f"unknown preset {arg['preset']!r}; known: {PRESETS}")
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.export_hf = False  # write workdir/hf_export at the end

    c.model = dict(
        preset="tiny",  # rlvr_jax.models.config.PRESETS name, used when init_from is empty
        init_from="",  # local HF checkpoint folder (weights + tokenizer)
        param_dtype="float32",
        compute_dtype="float32",
        remat=False,
        logits_chunk=0,  # > 0: LM head + log-softmax this many tokens at a time (long contexts)
        attention_chunk=0,  # > 0: attention in blocks of this many queries (long contexts)
        rope_theta=0.0,  # a preset's RoPE base (0: the preset's own); a checkpoint keeps its own
    )
    c.data = dict(
        source="synthetic",  # synthetic | gsm8k | math | answer (MATH-500/AIME jsonl) | parquet
        level=1,  # synthetic difficulty, 1..4 (rlvr_jax.data.synthetic.LEVELS)
        train_size=4000,  # synthetic examples
        eval_size=128,  # synthetic held-out examples
        train_files=(),
        eval_files=(),
        system="Solve the problem. Put the final answer in \\boxed{}.",
    )
    c.rl = dict(
        group_size=8,  # G
        adv_estimator="grpo",
        adv_eps=1e-6,
        adv_std_ddof=1,  # group std: 1 unbiased (verl, TRL), 0 population
        eps_low=0.2,
        eps_high=0.28,  # clip-higher
        dual_clip=config_dict.placeholder(float),
        # ppo_clip | kl_cov | clip_cov (docs/rlif.md); ratios are shares of the valid tokens;
        # gspo (eps 3e-4 / 4e-4, loss_agg seq_mean_token_mean) | cispo (docs/mismatch.md)
        policy_loss="ppo_clip",
        # Sampler/trainer mismatch: none | token_tis | seq_tis | token_mis (IcePop) | seq_mis
        rollout_correction="none",
        rollout_clip_low=0.5,  # MIS / IcePop lower bound on pi_old / mu (TIS ignores it)
        rollout_clip_high=2.0,  # TIS cap and MIS / IcePop upper bound
        kl_cov_ratio=0.002,
        kl_cov_coef=1.0,
        clip_cov_ratio=0.0002,
        clip_cov_lb=1.0,
        clip_cov_ub=5.0,
        beta=0.0,  # KL coefficient; 0 loads no reference
        kl_estimator="k3",
        loss_agg="token_mean",
        norm_len=config_dict.placeholder(int),
        entropy_coef=0.0,
        num_updates=1,  # optimizer updates per rollout batch
        dynamic_sampling=False,
        max_resample_rounds=0,
        overlong_filter=False,
        overlong_penalty=False,
        overlong_max_len=config_dict.placeholder(int),
        overlong_cache_len=config_dict.placeholder(int),
    )
    c.sampling = dict(
        max_new_tokens=64,  # tokens
        temperature=1.0,
        top_k=0,
        top_p=1.0,
        engine="static",  # or "continuous": slots refilled as rows stop (docs/engine.md)
        slots=64,
        decode_chunk=8,
        prefill_chunk=256,
        compute_dtype="",  # the sampler's activations: "" the model's own, or "bfloat16"
    )
    c.opt = dict(
        lr=1e-4,  # RL learning rate (3e-4 oscillated and 1e-3 collapsed on the tiny task)
        schedule="constant",
        warmup_steps=0,
        total_steps=100,
        grad_clip=1.0,
        weight_decay=0.0,
    )
    # RL steps, P; micro-batches per update (gradient accumulation) and per reference scoring call
    c.train = dict(steps=30, prompts_per_step=8, micro_batches=1, ref_micro_batches=1)
    # Supervised warm start on a noisy corpus: 60% of the worked solutions stop without a final
    # answer, as unfiltered corpora do; RL then has to learn to conclude (see README).
    c.warm_start = dict(
        steps=600,
        batch_size=32,
        lr=3e-3,
        warmup_steps=20,
        slip_frac=0.0,
        unanswered_frac=0.6,
        group_by_length=False,  # True: each step's rows from one length group (less padding)
    )
    c.eval = dict(every=10, num_prompts=64, k=4)  # steps; held-out prompts; samples per prompt
    c.ckpt = dict(
        every=10,  # steps
        max_to_keep=3,
        async_save=True,
        resume_from="",  # another run's workdir (or its ckpt/): continued when workdir has none
        # RELEX (experiments/relex.py): params every trajectory_every steps up to
        # trajectory_until (0: off), then every trajectory_sparse_every steps, kept forever.
        trajectory_until=0,
        trajectory_every=1,
        trajectory_sparse_every=0,
    )
    c.log = dict(every=1, tensorboard=True)
    c.verifier = dict(workers=2, timeout_s=10.0)
    # (data, fsdp, tensor) device counts over every process's devices; one -1 takes the rest.
    # The batch is split over data x fsdp, parameters over fsdp (and tensor, by their axes).
    # sampler: () samples on the training mesh; a (data, fsdp, tensor) shape samples on a sub-mesh
    # (or another layout) of the same devices, weights resharded once per rollout.
    c.mesh = dict(shape=(-1, 1, 1), sampler=())
    # Research objectives (docs/delta.md, docs/opd.md, docs/distil.md), all off here;
    # experiments/configs/opd_math.py and distil_math.py switch them on.
    # DelTA: per-token advantage coefficients (token_mean only).
    c.delta = dict(enabled=False, lam_min=0.8, lam_max=1.2, iters=1, chunk=0, gamma="released")
    # OPD: teacher = HF folder sharing the tokenizer; horizon full | truncated (TOPD, rho) |
    # linear (POPD: h0_frac -> 1 over ramp_steps) | staged (POPD: (start_step, fraction) pairs).
    c.opd = dict(
        enabled=False,
        teacher="",
        lambda_opd=1.0,
        mix_grpo=False,
        horizon="full",
        rho=0.1,
        h0_frac=0.1,
        ramp_steps=100,
        stages=((0, 0.1), (25, 0.25), (50, 0.5), (75, 1.0)),
    )
    # DistIL: feedback verifier | sibling | reference; teacher self (the policy reading the
    # feedback) | model (teacher_path, same tokenizer); grpo_coef mixes the GRPO loss back in.
    c.distil = dict(
        enabled=False,
        top_k=20,
        sequence_term=False,
        coef=1.0,
        feedback="verifier",
        teacher="self",
        teacher_path="",
        grpo_coef=0.0,
    )
    # Label-free RLIF (docs/rlif.md): rewards cluster_vote and/or self_certainty, combined by
    # GDPO; no reference answer is read for training. The recipe's KL-Cov is rl.policy_loss.
    c.rlif = dict(
        enabled=False,
        rewards=("cluster_vote", "self_certainty"),
        weights=(1.0, 0.5),
        soft_share=False,
        tie_break="first",
        adv_eps=1e-6,
        adv_std_ddof=1,  # GDPO's group and batch stds: 1 unbiased (the authors'), 0 population
    )

    if arg["preset"] == "qwen2p5_math_1p5b":
        c.model.preset = ""
        c.data.source = "gsm8k"
        c.sampling.max_new_tokens = 1024
        c.rl.beta = 0.04
        c.opt.lr = 1e-6
        c.train.steps = 500
        c.train.prompts_per_step = 64
        c.train.micro_batches = 16
        c.train.ref_micro_batches = 16  # python -m rlvr_jax.plan: fits a v5e-8 on (1, 8, 1)
        c.warm_start.update(steps=0, unanswered_frac=0.0)
        c.model.param_dtype = "float32"
        c.model.compute_dtype = "bfloat16"
        c.model.remat = True
        c.mesh.shape = (1, -1, 1)  # FSDP: weights and Adam moments split over every device
    elif arg["preset"] == "qwen3_8b_base":
        c.model.preset = ""
        c.data.source = "math"
        c.sampling.max_new_tokens = 2048
        c.rl.update(eps_high=0.28, dynamic_sampling=True, max_resample_rounds=2)
        c.opt.lr = 1e-6
        c.train.steps = 500
        c.train.prompts_per_step = 128
        c.train.micro_batches = 64
        c.train.ref_micro_batches = 16
        c.warm_start.update(steps=0, unanswered_frac=0.0)
        c.model.compute_dtype = "bfloat16"
        c.model.remat = True
        c.mesh.shape = (1, -1, 1)  # FSDP: weights and Adam moments split over every device
    return c
