"""Capacity planner: per-device memory and estimated step time of one RL step on a mesh of chips.

`planner.plan(model_cfg, chip=..., mesh_shape=..., ...)` is the library entry point;
`python -m rlvr_jax.plan --config=... --mesh=... --chip=...` prints its report.
"""
