"""The Ecom-RLVE embedded tokenizer: a 1,024-token byte-level BPE trained on scripted episodes.

Run:    python -m rlvr_jax.envs.ecom.tokenizer [--out DIR]
The tiny math tokenizer spells tool calls, product lines and policy text nearly byte by byte; this
one is trained (same pre-tokenizer, special tokens and ChatML template as the tiny tokenizer) on
the chat-template text of the scripted experts' episodes in every environment at difficulties
0-8, so an episode takes ~2.5x fewer tokens. Seeded: two builds write byte-identical files, and
tests/ecom_tokenizer_test.py checks the checked-in copy. A real checkpoint brings its own
tokenizer; this one is for the embedded CPU default (`model.tokenizer`).
"""

from __future__ import annotations

import os

from rlvr_jax.models import build_tiny_tokenizer as builder

VOCAB_SIZE = 1024
ASSET_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets", "tokenizer")
EPISODES_PER_ENV = 150
SEED0 = 3_000_000  # corpus episode seeds (disjoint from train, eval and warm-start seeds)


def corpus() -> list[str]:
    """Every environment's scripted episodes as rendered ChatML text (plus a random policy's
    malformed calls, so error messages are in the vocabulary too)."""
    import numpy as np  # noqa: PLC0415

    from rlvr_jax.envs.ecom import envs, experts  # noqa: PLC0415

    texts = []
    for name in envs.ENV_NAMES:
        env = envs.make_env(name)
        expert = experts.expert_for(name)
        rng = np.random.default_rng(0)
        for i in range(EPISODES_PER_ENV):
            policy = experts.random_policy(rng) if i % 10 == 9 else expert
            messages, _ = experts.run_episode(env, policy, SEED0 + i, i % 9)
            texts.append(_render(messages))
    return texts


def _render(messages) -> str:
    return "".join(
        f"{builder.IM_START}{m['role']}\n{m['content']}{builder.IM_END}\n" for m in messages
    )


def main() -> None:
    builder.main_for(__doc__, ASSET_DIR, corpus, VOCAB_SIZE)


if __name__ == "__main__":
    main()
