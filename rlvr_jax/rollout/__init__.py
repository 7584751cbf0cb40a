"""Rollout engines and the Rollout they all return (types.py)."""
