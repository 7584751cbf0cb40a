"""The LongTraceRL embedded tokenizer: a 2,048-token byte-level BPE trained on the synthetic
knowledge graph's documents and questions.

Run:    python -m rlvr_jax.data.longtrace_tokenizer [--out DIR]
The tiny math tokenizer spells the graph's invented names nearly letter by letter; this one is
trained (same pre-tokenizer, special tokens and ChatML template as the tiny tokenizer) on every
document of the default graph (6,000 entities, seed 0), a sample of its multi-hop questions and
their worked chains, so a packed context holds about twice the documents per token. Seeded: two
builds write byte-identical files, and tests/longtrace_task_test.py checks the checked-in copy. A
real checkpoint brings its own tokenizer; this one is for the embedded CPU default
(`model.tokenizer`).
"""

from __future__ import annotations

import os

from rlvr_jax.models import build_tiny_tokenizer as builder

VOCAB_SIZE = 2048
ASSET_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets", "longtrace_tok")
QUESTIONS = 3000
SEED = 5_000_003  # the corpus questions' seed (not a train, test or warm-start seed)


def corpus() -> list[str]:
    """The documents, and questions with their chains, as ChatML text."""
    from rlvr_jax.data import longtrace_context as context_lib  # noqa: PLC0415
    from rlvr_jax.data import longtrace_kg as kg_lib  # noqa: PLC0415

    graph = kg_lib.build_graph()
    texts = [f"Document [1]: {d.title}\n{d.text}\n\n" for d in graph.documents]
    for ex in context_lib.short_examples(graph, QUESTIONS, seed=SEED, split="train"):
        chain = " -> ".join(ex.meta["gold_entities"])
        texts.append(
            f"{builder.IM_START}user\n{ex.prompt}{builder.IM_END}\n"
            f"{builder.IM_START}assistant\nChain: {chain}\nAnswer: {ex.answer}{builder.IM_END}\n"
        )
    return texts


def main() -> None:
    builder.main_for(__doc__, ASSET_DIR, corpus, VOCAB_SIZE)


if __name__ == "__main__":
    main()
