"""Plain-text tables of a Plan: memory per phase, time per phase, the verdict, and a mesh sweep."""

from __future__ import annotations

from collections.abc import Sequence

from rlvr_jax.plan import planner

GiB = 2**30


def _gib(n: float) -> str:
    return f"{n / GiB:.2f}"


def verdict(p: planner.Plan) -> str:
    """The one line a user acts on: fits, or by how much it does not."""
    phase = p.peak_phase.name
    if p.fits:
        return (
            f"FITS: peak {_gib(p.peak)} GiB per device ({phase} phase), chip has "
            f"{_gib(p.budget)} GiB usable."
        )
    return (
        f"DOES NOT FIT: needs {_gib(p.peak)} GiB per device ({phase} phase), chip has "
        f"{_gib(p.budget)} GiB usable."
    )


def format_plan(p: planner.Plan, model_name: str = "") -> str:
    """The full report: workload, memory table, activation sizes, time table, verdict."""
    cfg, chip = p.model, p.chip
    data, fsdp, tensor = p.mesh_shape
    n = data * fsdp * tensor
    shards = data * fsdp
    micro_rows = p.rows // p.num_updates // p.micro_batches
    lines = [
        f"Model: {model_name or cfg.model_type} ({cfg.num_params() / 1e9:.2f} B params; params "
        f"{cfg.param_dtype}, compute {cfg.compute_dtype}, remat {'on' if cfg.remat else 'off'}, "
        f"logits_chunk {cfg.logits_chunk or 'off'}, "
        f"attention_chunk {cfg.attention_chunk or 'off'})",
        f"Chips: {n} x {chip.name}, mesh data={data} fsdp={fsdp} tensor={tensor}; "
        f"{_gib(chip.hbm_bytes)} GiB HBM per chip, {_gib(p.budget)} GiB usable",
        f"Step:  {p.rows} rows, prompt {p.prompt_len} + completion {p.completion_len} tokens; "
        f"{p.num_updates} update(s) x {p.micro_batches} micro-batches of {micro_rows} rows "
        f"({-(-micro_rows // shards)} per device); reference "
        + (f"on, scored in {p.ref_micro_batches} call(s)" if p.reference else "off"),
        "",
    ]
    names = [ph.name for ph in p.phases]
    components = []
    for ph in p.phases:
        components += [k for k, _ in ph.memory if k not in components]
    width = max(len(k) for k in components) + 2
    lines.append(f"{'Memory per device (GiB)':<{width}}" + "".join(f"{x:>12}" for x in names))
    for k in components:
        cells = [dict(ph.memory).get(k) for ph in p.phases]
        lines.append(
            f"  {k:<{width - 2}}" + "".join(f"{'' if v is None else _gib(v):>12}" for v in cells)
        )
    lines.append(f"  {'total':<{width - 2}}" + "".join(f"{_gib(ph.peak):>12}" for ph in p.phases))
    with_remat, without = p.activations
    lines += [
        "",
        f"Train activations, one micro-batch on one device: {_gib(with_remat)} GiB with remat, "
        f"{_gib(without)} GiB without",
        f"Compiled train_step (state + batch + temporaries): {_gib(p.train_step_bytes)} GiB",
        "",
        f"{'Time per RL step (estimate)':<{width}}"
        + "".join(f"{x:>12}" for x in names)
        + f"{'total':>12}",
    ]
    rows = (
        ("compute (TFLOP)", [ph.flops / 1e12 for ph in p.phases], "{:.1f}"),
        ("HBM traffic (GB)", [ph.hbm_bytes / 1e9 for ph in p.phases], "{:.0f}"),
        ("interconnect (GB)", [ph.link_bytes / 1e9 for ph in p.phases], "{:.1f}"),
        ("seconds", [ph.seconds for ph in p.phases], "{:.2f}"),
    )
    for label, vals, fmt in rows:
        total = fmt.format(sum(vals))
        lines.append(
            f"  {label:<{width - 2}}"
            + "".join(f"{fmt.format(v):>12}" for v in vals)
            + f"{total:>12}"
        )
    tokens = p.rows * p.completion_len
    lines += [
        f"  per device, all {p.completion_len} decode steps run; "
        f"{tokens / p.step_seconds / n:,.0f} completion tokens/s per chip",
        "",
        *[f"Note: {x}" for x in p.notes],
        verdict(p),
    ]
    return "\n".join(lines)


def format_sweep(plans: Sequence[planner.Plan]) -> str:
    """One line per mesh shape: peak memory, its phase, fits, step time."""
    if not plans:
        return ""
    n = plans[0].mesh_shape[0] * plans[0].mesh_shape[1] * plans[0].mesh_shape[2]
    lines = [
        f"Meshes of {n} chips (data, fsdp, tensor)   peak GiB   phase       fits   step s",
    ]
    for p in sorted(plans, key=lambda p: (not p.fits, p.step_seconds if p.fits else p.peak)):
        shape = "({}, {}, {})".format(*p.mesh_shape)
        lines.append(
            f"  {shape:<38}{_gib(p.peak):>9}   {p.peak_phase.name:<10}"
            f"{'yes' if p.fits else 'no':>5}{p.step_seconds:>9.1f}"
        )
    return "\n".join(lines)
