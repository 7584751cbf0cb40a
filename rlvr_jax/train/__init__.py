"""Training: state, the pure train step, checkpoints, metrics and the RL loop."""
