"""`plan(...)`: per-device memory of each phase of one RL step and an estimated step time.

An RL step has three phases, run one after another on the same devices: sampling (prefill + decode
of every rollout row), reference scoring (when beta > 0) and the train step(s). Each phase's memory
is what stays resident (policy, optimizer state, reference, batch) plus what the phase allocates;
the step fits when the largest phase fits the chip. Times are a roofline: per phase
max(FLOPs / (peak * mfu), HBM bytes / HBM bandwidth) plus the interconnect volume of its
collectives, assumed not overlapped (so an upper bound on communication).
"""

# pylint: disable=invalid-name
from __future__ import annotations

import dataclasses
import itertools

from rlvr_jax import sampling
from rlvr_jax.models import config as config_lib
from rlvr_jax.plan import catalog, memory

_SAMPLER_VOCAB_PASSES = 6  # [b, V] float32 passes per decode step: logits, softmax, cumsum, ...


@dataclasses.dataclass(frozen=True, kw_only=True)
class Phase:
    """One phase of the RL step on one device."""

    name: str  # sample | reference | train
    memory: tuple[tuple[str, int], ...]  # (component, bytes), all live at the phase's peak
    flops: float
    hbm_bytes: float
    link_bytes: float  # sent or received over ICI / NVLink by one device
    seconds: float

    @property
    def peak(self) -> int:
        return sum(b for _, b in self.memory)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Plan:
    """A capacity plan: what one device holds in each phase, and how long a step takes."""

    model: config_lib.ModelConfig
    chip: catalog.Chip
    mesh_shape: memory.MeshShape
    rows: int  # B = prompts x G
    prompt_len: int  # Tp
    completion_len: int  # Tc
    micro_batches: int
    num_updates: int
    reference: bool
    ref_micro_batches: int
    phases: tuple[Phase, ...]
    activations: tuple[int, int]  # one train micro-batch on one device: (with, without remat)
    train_step_bytes: int  # one compiled train_step: state + batch + temporaries
    budget: int  # usable bytes per device
    notes: tuple[str, ...]

    @property
    def peak(self) -> int:
        return max(p.peak for p in self.phases)

    @property
    def peak_phase(self) -> Phase:
        return max(self.phases, key=lambda p: p.peak)

    @property
    def fits(self) -> bool:
        return self.peak <= self.budget

    @property
    def step_seconds(self) -> float:
        return sum(p.seconds for p in self.phases)


def _ring(n: int) -> float:
    """Bytes each device moves per byte of result in a ring all-gather or reduce-scatter."""
    return (n - 1) / n


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Costs:
    """Per-device quantities every phase uses, and the roofline that turns them into seconds."""

    cfg: config_lib.ModelConfig
    mesh_shape: memory.MeshShape
    chip: catalog.Chip
    mfu: float
    resident: tuple[tuple[str, int], ...]  # params, optimizer state, reference
    params: int  # this device's policy shard
    weights: int  # the weights a matmul reads: after the FSDP all-gather, one tensor shard

    @property
    def gather(self) -> float:
        """Bytes received by one FSDP all-gather of every weight."""
        return self.weights * _ring(self.mesh_shape[1])

    @property
    def matmul_params(self) -> float:
        """Decoder weights in matmuls, per device (split over tensor)."""
        D, H, N, K, F, _ = self.cfg.dims
        return (
            self.cfg.num_layers * (2 * D * H * K + 2 * D * N * K + 3 * D * F) / self.mesh_shape[2]
        )

    def attention_flops(self, b: int, Tq: int, S: int) -> float:
        """QK^T and PV over all S slots (the code computes masked scores; no causal skipping)."""
        H_loc = -(-self.cfg.num_heads // self.mesh_shape[2])
        return 4 * b * Tq * S * H_loc * self.cfg.head_dim * self.cfg.num_layers

    def tensor_allreduce(self, b: int, T: int, count: int) -> float:
        """Bytes of `count` all-reduces of a [b, T, D] activation over tensor, per layer."""
        c = 2 if self.cfg.compute_dtype == "bfloat16" else 4
        t = self.mesh_shape[2]
        return count * self.cfg.num_layers * b * T * self.cfg.d_model * c * 2 * _ring(t)

    def seconds(self, flops: float, hbm: float, link: float) -> float:
        chip = self.chip
        return max(flops / (chip.peak_flops * self.mfu), hbm / chip.hbm_bw) + link / chip.link_bw


def _sample_phase(k: _Costs, rows: int, Tp: int, Tc: int, segments: int) -> Phase:
    """Prefill of every prompt, then Tc decode steps over every row at once (rollout.sample)."""
    cfg, ms, tensor = k.cfg, k.mesh_shape, k.mesh_shape[2]
    b = memory.rows_per_device(rows, ms)
    kv = memory.kv_cache_bytes(cfg, b, Tp + Tc, tensor)
    mem = (
        *k.resident,
        ("KV cache", kv),
        ("working set", memory.sampling_temp(cfg, ms, b, Tp, Tc, segments)),
    )
    D, V = cfg.d_model, cfg.vocab_size
    flops = 2 * b * Tp * k.matmul_params + k.attention_flops(b, Tp, Tp + Tc) + 2 * b * D * V
    hbm, link = k.weights + kv, k.gather + k.tensor_allreduce(b, Tp, 2)
    seconds = k.seconds(flops, hbm, link)
    start = 0
    for end in sampling.segment_ends(Tc, segments):  # segment j attends to Tp + end_j slots
        f = 2 * b * (k.matmul_params + D * V) + k.attention_flops(b, 1, Tp + end)
        h = k.weights + memory.kv_cache_bytes(cfg, b, Tp + end, tensor)
        h += _SAMPLER_VOCAB_PASSES * b * V * 4
        li = k.gather + k.tensor_allreduce(b, 1, 2)  # FSDP re-gathers the weights every step
        steps, start = end - start, end
        flops, hbm, link = flops + steps * f, hbm + steps * h, link + steps * li
        seconds += steps * k.seconds(f, h, li)
    return Phase(
        name="sample", memory=mem, flops=flops, hbm_bytes=hbm, link_bytes=link, seconds=seconds
    )


def _reference_phase(k: _Costs, rows: int, Tp: int, Tc: int, calls: int) -> Phase:
    """Reference log-probs of the whole batch in `calls` forward passes (make_logps_fn)."""
    cfg, ms, T = k.cfg, k.mesh_shape, Tp + Tc
    b = memory.rows_per_device(rows // calls, ms)
    mem = (
        *k.resident,
        ("batch", memory.batch_bytes(memory.rows_per_device(rows, ms), Tp, Tc, False)),
        ("working set", memory.scoring_temp(cfg, ms, b, Tp, Tc)),
    )
    f = 2 * b * T * k.matmul_params + k.attention_flops(b, T, T)
    f += 2 * b * Tc * cfg.d_model * cfg.vocab_size
    li = k.gather + k.tensor_allreduce(b, T, 2)
    return Phase(
        name="reference",
        memory=mem,
        flops=calls * f,
        hbm_bytes=calls * k.weights,
        link_bytes=calls * li,
        seconds=calls * k.seconds(f, k.weights, li),
    )


def _train_phase(
    k: _Costs, rows: int, Tp: int, Tc: int, updates: int, micro: int, reference: bool
) -> tuple[Phase, int]:
    """`updates` optimizer steps, each over `micro` micro-batches (train.step.train_step).

    Returns the phase and the bytes of one compiled train_step (state + batch + temporaries).
    """
    cfg, ms, T = k.cfg, k.mesh_shape, Tp + Tc
    data, fsdp, _ = ms
    b = memory.rows_per_device(rows // updates // micro, ms)
    temp = memory.train_step_temp(cfg, ms, b, Tp, Tc)
    batch = memory.batch_bytes(memory.rows_per_device(rows // updates, ms), Tp, Tc, reference)
    mem = (
        *k.resident,
        ("batch", batch),
        ("activations / gradients working set", temp),
    )
    r = int(cfg.remat)
    # Checkpointed attention blocks and LM-head chunks run their forward once more in the
    # backward (unless remat already recomputes the whole layer).
    ra = int(0 < cfg.attention_chunk < T and not cfg.remat)
    rh = int(cfg.logits_chunk > 0)
    f = (6 + 2 * r) * b * T * k.matmul_params + (3 + r + ra) * k.attention_flops(b, T, T)
    f += (6 + 2 * rh) * b * Tc * cfg.d_model * cfg.vocab_size
    h = (3 + r) * k.weights + 2 * k.params  # weights per pass; gradient accumulate
    # The scan's carry is sharded like the params, so every micro-batch reduces its gradients:
    # reduce-scatter over fsdp and all-reduce over data.
    li = (
        (2 + r) * k.gather  # weights for the forward, the backward (and the recompute)
        + k.weights * _ring(fsdp)
        + 2 * k.params * _ring(data)
        + k.tensor_allreduce(b, T, 4 + 2 * r)
    )
    opt = memory.optimizer_bytes(cfg, ms)
    opt_hbm = 3 * k.params + 2 * opt  # read params, grads, moments; write params, moments
    n = updates * micro
    phase = Phase(
        name="train",
        memory=mem,
        flops=n * f,
        hbm_bytes=n * h + updates * opt_hbm,
        link_bytes=n * li,
        seconds=n * k.seconds(f, h, li) + updates * opt_hbm / k.chip.hbm_bw,
    )
    state = k.params + opt
    return phase, state + batch + temp


def plan(
    model_cfg: config_lib.ModelConfig,
    *,
    chip: str | catalog.Chip,
    mesh_shape: memory.MeshShape,
    rows: int,
    prompt_len: int,
    completion_len: int,
    micro_batches: int = 1,
    num_updates: int = 1,
    reference: bool = False,
    ref_micro_batches: int = 1,
    decode_segments: int = 4,
    mfu: float = 0.4,
    usable_frac: float = 0.9,
) -> Plan:
    """Plans one RL step of `rows` sequences of `prompt_len + completion_len` tokens.

    `model_cfg` carries the dtypes and remat. The mesh is (data, fsdp, tensor) as in
    `mesh.make_mesh`: the batch splits over data x fsdp, parameters and optimizer state over
    fsdp x tensor (mesh.DEFAULT_RULES), and the reference params like the policy's.
    `ref_micro_batches` is how many sequential micro-batches score the reference log-probs
    (train/loop.py: rl.num_updates x train.ref_micro_batches).
    """
    chip = catalog.get_chip(chip) if isinstance(chip, str) else chip
    cfg, ms = model_cfg, tuple(mesh_shape)
    if len(ms) != 3 or min(ms) < 1:
        raise ValueError(f"mesh_shape={mesh_shape} must be three sizes >= 1 (data, fsdp, tensor)")
    if rows % num_updates or (rows // num_updates) % micro_batches:
        raise ValueError(
            f"{rows} rows do not split into num_updates={num_updates} x "
            f"micro_batches={micro_batches}"
        )
    if rows % ref_micro_batches:
        raise ValueError(f"{rows} rows do not split into ref_micro_batches={ref_micro_batches}")
    notes = []
    shards, micro_rows = ms[0] * ms[1], rows // num_updates // micro_batches
    if micro_rows % shards:
        notes.append(
            f"a micro-batch of {micro_rows} rows does not split evenly over {shards} batch "
            "shards (data x fsdp); per-device figures round up"
        )
    if ms[1] > 1:
        notes.append(
            "fsdp > 1: figures assume XLA keeps activations batch-sharded; transformer.py sets "
            "no activation sharding constraints, and on a (1, 8, 1) CPU mesh the compiled tiny "
            "train step held ~2x the planned temporaries (MLP activations replicated over fsdp)"
        )
    if cfg.num_kv_heads % ms[2]:
        notes.append(f"{cfg.num_kv_heads} KV heads do not split over tensor={ms[2]}; rounded up")

    params = memory.param_bytes(cfg, ms)
    resident = [("params (policy)", params), ("optimizer state", memory.optimizer_bytes(cfg, ms))]
    if reference:
        resident.append(("reference params", params))  # a copy of the policy at step 0
    k = _Costs(
        cfg=cfg,
        mesh_shape=ms,
        chip=chip,
        mfu=mfu,
        resident=tuple(resident),
        params=params,
        weights=memory.param_bytes(cfg, memory.gathered(ms)),
    )
    Tp, Tc = prompt_len, completion_len
    phases = [_sample_phase(k, rows, Tp, Tc, decode_segments)]
    if reference:
        phases.append(_reference_phase(k, rows, Tp, Tc, ref_micro_batches))
    train, train_step_bytes = _train_phase(k, rows, Tp, Tc, num_updates, micro_batches, reference)
    phases.append(train)
    b = memory.rows_per_device(micro_rows, ms)
    activations = tuple(
        memory.train_activations(dataclasses.replace(cfg, remat=x), ms, b, Tp, Tc).peak
        for x in (True, False)
    )
    return Plan(
        model=cfg,
        chip=chip,
        mesh_shape=ms,
        rows=rows,
        prompt_len=Tp,
        completion_len=Tc,
        micro_batches=micro_batches,
        num_updates=num_updates,
        reference=reference,
        ref_micro_batches=ref_micro_batches,
        phases=tuple(phases),
        activations=activations,
        train_step_bytes=train_step_bytes,
        budget=int(chip.hbm_bytes * usable_frac),
        notes=tuple(notes),
    )


def mesh_shapes(devices: int, model_cfg: config_lib.ModelConfig) -> list[memory.MeshShape]:
    """Every (data, fsdp, tensor) over `devices` chips whose tensor size divides the KV heads."""
    out = []
    for data, fsdp in itertools.product(range(1, devices + 1), repeat=2):
        if devices % (data * fsdp) == 0:
            tensor = devices // (data * fsdp)
            if model_cfg.num_kv_heads % tensor == 0:
                out.append((data, fsdp, tensor))
    return out
