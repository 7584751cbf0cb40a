"""RL objectives as pure functions: RLConfig, group advantages, the clipped policy loss with KL and
entropy terms, DAPO's host-side filters, and pass@k."""
