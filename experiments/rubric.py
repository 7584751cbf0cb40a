"""Rubric rewards with POW3R: `python experiments/rubric.py --workdir=DIR`.

Every completion is graded per criterion (programmatic checks; judge criteria through a local
model run by our sampler); POW3R reweights the criteria from each group's verdicts for the
training reward, and evaluation keeps the human weights (docs/pow3r.md). Same loop, flags and
resume behaviour as grpo_math.py.
"""

from __future__ import annotations

from experiments import entry

if __name__ == "__main__":
    entry.run("rubric.py")
