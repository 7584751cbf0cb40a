"""The rollout engine: continuous batching over KV-cache slots (engine.py), its device side
(slots.py)."""
