"""LongTraceRL: `python experiments/longtrace.py --workdir=DIR [--config=...:combination=outcome]`.

GRPO on multi-hop questions over packed long contexts, rewarded by the outcome and the entity
rubric on correct answers (experiments/configs/longtrace.py). The loop, flags, resume and
CPU-device behaviour are experiments/entry.py's.
"""

from __future__ import annotations

from experiments import entry

if __name__ == "__main__":
    entry.run("longtrace.py")
