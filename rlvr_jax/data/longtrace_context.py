"""LongTraceRL contexts: gold documents plus tiered distractors, packed to a token budget.

The paper's distractors come from a search agent's trajectory: Tier-1 documents (high
confusability) were opened and not cited, Tier-2 documents (low confusability) appeared in search
results and were never opened. Here, over the synthetic graph of longtrace_kg:

- Tier-1 of a walk: documents of entities that are not on the path but are graph neighbours of a
  path entity (either direction), or have a name one edit from a path entity's ("Doravell" for
  "Doravel", of any type), or are of a path entity's type and share a relation target with it
  (other cities in the same country) or a distinctive name word (other people called Ada).
- Tier-2: any other document.

Distractors alternate between the tiers so that the running Tier-1 fraction tracks `tier1_ratio`;
when the Tier-1 pool runs out the rest is Tier-2. `meta["tier"]` names the dominant tier of the
distractors actually packed: "tier1" if at least 3/4 of them are Tier-1, "tier2" if at most 1/4
are (or there are none), else "mixed".
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from collections.abc import Callable, Sequence

from rlvr_jax.data import longtrace_kg as kg
from rlvr_jax.data import longtrace_names as names
from rlvr_jax.data import types

SPLITS = ("train", "test")
SOURCE = "longtrace"
# A start entity belongs to the test split iff sha256(name) lands in bucket 0 of 8: train and test
# never share a walk (nor a start), whatever the seeds and sizes.
TEST_BUCKETS = 8
# The chain line is what the entity rubric reads; the answer line is what the outcome reads.
INSTRUCTION = (
    "Write the chain of entities you followed as Chain: A -> B -> ..., then the answer on the "
    "last line as Answer: <name>"
)
_MAX_FAILED_WALKS = 2000

CountTokens = Callable[[str], int]


def whitespace_tokens(text: str) -> int:
    """A tokenizer-free token count: whitespace-separated words."""
    return len(text.split())


def is_test_start(name: str) -> bool:
    """Whether walks starting at the entity called `name` belong to the test split."""
    return hashlib.sha256(name.encode()).digest()[0] % TEST_BUCKETS == 0


def tier1_candidates(walk: kg.Walk, graph: kg.KnowledgeGraph) -> list[int]:
    """The Tier-1 pool of `walk` (see the module docstring), sorted by entity id."""
    on_path = set(walk.entities)
    pool: set[int] = set()
    for e in walk.entities:
        kind = graph.entities[e].type
        pool.update(other for _, other in graph.out_edges[e])
        pool.update(other for _, other in graph.in_edges[e])
        for rel, target in graph.out_edges[e]:  # same type, same relation target
            pool.update(
                s for r, s in graph.in_edges[target] if r == rel and graph.entities[s].type == kind
            )
        for word in names.name_words(graph.entities[e].name):
            pool.update(o for o in graph.by_word.get(word, ()) if graph.entities[o].type == kind)
        pool.update(graph.twins.get(e, ()))
    return sorted(pool - on_path)


def doc_block(k: int, doc: kg.Document) -> str:
    return f"Document [{k}]: {doc.title}\n{doc.text}"


def render_prompt(context: str, question: str) -> str:
    """The prompt: the context, the question, then the answer-format instruction."""
    head = f"{context}\n\n" if context else ""
    return f"{head}Question: {question}\n{INSTRUCTION}"


@dataclasses.dataclass(frozen=True)
class Packed:
    """A packed context: its prompt and what went into it, in prompt order."""

    prompt: str
    doc_ids: tuple[int, ...]
    n_tier1: int
    n_tier2: int
    tokens: int

    @property
    def tier(self) -> str:
        total = self.n_tier1 + self.n_tier2
        if total and self.n_tier1 >= 0.75 * total:
            return "tier1"
        return "tier2" if self.n_tier1 <= 0.25 * total else "mixed"


def _distractor_stream(
    walk: kg.Walk, graph: kg.KnowledgeGraph, tier1_ratio: float, rng: random.Random
):
    """Yields (entity, is_tier1) without end: Tier-1 while the running fraction is below the
    ratio and the pool lasts, else Tier-2 (random other documents, each at most once)."""
    tier1 = tier1_candidates(walk, graph)
    rng.shuffle(tier1)
    excluded = set(tier1) | set(walk.entities)
    n_entities, seen2 = len(graph.entities), set()
    n1 = n = 0
    while True:
        if tier1 and n1 < round(tier1_ratio * (n + 1)):
            n1 += 1
            yield tier1.pop(), True
        else:
            if len(excluded) + len(seen2) >= n_entities:
                return
            while (e := rng.randrange(n_entities)) in excluded or e in seen2:
                pass
            seen2.add(e)
            yield e, False
        n += 1


def pack_context(
    walk: kg.Walk,
    graph: kg.KnowledgeGraph,
    *,
    max_tokens: int | None,
    count_tokens: CountTokens,
    tier1_ratio: float,
    rng: random.Random,
    uid: str,
    max_distractors: int | None = None,
) -> Packed:
    """The gold documents plus distractors, shuffled, as one prompt of at most `max_tokens` tokens.

    Distractors are added greedily until the next one does not fit (or `max_distractors` are in;
    `max_tokens=None` means no budget). The budget covers the whole prompt: documents, question
    and instruction. Raises ValueError naming `uid` if the gold documents and question alone do
    not fit: contexts are never truncated.
    """
    if not 0.0 <= tier1_ratio <= 1.0:
        raise ValueError(f"tier1_ratio must be in [0, 1], got {tier1_ratio}")
    gold = list(walk.entities)
    sizes: dict[int, int] = {}

    def size(e: int) -> int:  # a block's tokens plus its separator, with a two-digit number
        if e not in sizes:
            sizes[e] = count_tokens(doc_block(10, graph.documents[e]) + "\n\n")
        return sizes[e]

    base = count_tokens(render_prompt("", walk.question))
    used = base + sum(size(e) for e in gold)
    if max_tokens is not None and used > max_tokens:
        used = count_tokens(_render(gold, walk, graph))
        if used > max_tokens:
            raise ValueError(
                f"longtrace sample {uid}: gold documents and question need {used} tokens, "
                f"over the budget max_tokens={max_tokens}"
            )
    chosen: list[tuple[int, bool]] = []
    limit = max_distractors if max_distractors is not None else len(graph.entities)
    for e, is_tier1 in _distractor_stream(walk, graph, tier1_ratio, rng):
        if len(chosen) >= limit or (max_tokens is not None and used + size(e) > max_tokens):
            break
        chosen.append((e, is_tier1))
        used += size(e)
    order = rng.sample(range(len(gold) + len(chosen)), len(gold) + len(chosen))
    while True:  # per-block counts are estimates (numbering, merges): check the real prompt
        docs = gold + [e for e, _ in chosen]
        shown = [docs[i] for i in order if i < len(docs)]
        prompt = _render(shown, walk, graph)
        tokens = count_tokens(prompt)
        if max_tokens is None or tokens <= max_tokens or not chosen:
            break
        chosen.pop()  # the gold prompt alone fits (checked above), so this ends
    if max_tokens is not None and tokens > max_tokens:
        raise ValueError(
            f"longtrace sample {uid}: gold documents and question need {tokens} tokens, "
            f"over the budget max_tokens={max_tokens}"
        )
    n1 = sum(t for _, t in chosen)
    return Packed(prompt, tuple(shown), n1, len(chosen) - n1, tokens)


def _render(doc_ids: Sequence[int], walk: kg.Walk, graph: kg.KnowledgeGraph) -> str:
    blocks = [doc_block(k + 1, graph.documents[e]) for k, e in enumerate(doc_ids)]
    return render_prompt("\n\n".join(blocks), walk.question)


# --- Examples ---


def sample_walks(
    graph: kg.KnowledgeGraph,
    n: int,
    *,
    seed: int,
    split: str,
    min_hops: int = 2,
    max_hops: int = 8,
    hop_weights: Sequence[float] | None = None,
) -> list[kg.Walk]:
    """`n` walks with distinct questions, starts on `split`'s side of the hash split, hop counts
    drawn from [min_hops, max_hops] (uniform unless `hop_weights` are given, one per count)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if not kg.MIN_HOPS <= min_hops <= max_hops <= kg.MAX_HOPS:
        raise ValueError(f"need {kg.MIN_HOPS} <= min_hops <= max_hops <= {kg.MAX_HOPS}")
    hop_range = list(range(min_hops, max_hops + 1))
    if hop_weights is not None and len(hop_weights) != len(hop_range):
        raise ValueError(f"hop_weights needs {len(hop_range)} weights, got {len(hop_weights)}")
    want_test = split == "test"
    starts = [e.id for e in graph.entities if is_test_start(e.name) == want_test]
    rng = random.Random(f"rlvr_jax.data.longtrace/walks/{split}/{seed}")
    walks, seen, failed = [], set(), 0
    while len(walks) < n:
        hops = rng.choices(hop_range, weights=hop_weights)[0]
        walk = kg.sample_walk(graph, hops, rng, starts=starts)
        if walk.question in seen:
            failed += 1
            if failed > _MAX_FAILED_WALKS:
                raise ValueError(f"only {len(walks)} distinct {split} walks, wanted {n}")
            continue
        seen.add(walk.question)
        walks.append(walk)
        failed = 0
    return walks


def _example(uid: str, walk: kg.Walk, packed: Packed, tier1_ratio: float) -> types.Example:
    return types.Example(
        uid=uid,
        prompt=packed.prompt,
        answer=walk.answer,
        source=SOURCE,
        meta={
            "hops": walk.hops,
            "gold_entities": list(walk.chain),
            "tier1_ratio": float(tier1_ratio),
            "tier": packed.tier,
            "context_tokens": packed.tokens,
            "n_docs": len(packed.doc_ids),
            "n_tier1": packed.n_tier1,
            "n_tier2": packed.n_tier2,
        },
    )


def make_examples(
    graph: kg.KnowledgeGraph,
    n: int,
    *,
    seed: int,
    min_hops: int = 2,
    max_hops: int = 8,
    max_tokens: int,
    count_tokens: CountTokens,
    tier1_ratio: float,
    split: str,
    hop_weights: Sequence[float] | None = None,
) -> list[types.Example]:
    """`n` long-context multi-hop examples of `split`, each prompt filling `max_tokens`.

    uids are "longtrace/<split>/<seed>/<index>". The same arguments give the same examples.
    """
    walks = sample_walks(
        graph, n, seed=seed, split=split, min_hops=min_hops, max_hops=max_hops,
        hop_weights=hop_weights,
    )  # fmt: skip
    return _packed(
        walks, graph, f"{SOURCE}/{split}/{seed}", f"pack/{split}/{seed}",
        max_tokens=max_tokens, count_tokens=count_tokens, tier1_ratio=tier1_ratio,
    )  # fmt: skip


def _packed(
    walks: Sequence[kg.Walk], graph: kg.KnowledgeGraph, uid_prefix: str, stream: str, **pack
) -> list[types.Example]:
    """Each walk packed (`pack_context(**pack)`) with one random stream, uids `uid_prefix/i`."""
    rng = random.Random(f"rlvr_jax.data.longtrace/{stream}")
    out = []
    for i, walk in enumerate(walks):
        uid = f"{uid_prefix}/{i}"
        packed = pack_context(walk, graph, rng=rng, uid=uid, **pack)
        out.append(_example(uid, walk, packed, pack["tier1_ratio"]))
    return out


def short_examples(
    graph: kg.KnowledgeGraph,
    n: int,
    *,
    seed: int,
    min_hops: int = 2,
    max_hops: int = 8,
    split: str,
    count_tokens: CountTokens = whitespace_tokens,
    n_distractors: int = 2,
    tier1_ratio: float = 1.0,
    hop_weights: Sequence[float] | None = None,
) -> list[types.Example]:
    """The warm-start version of `make_examples` (same arguments give the same questions): the
    gold documents plus at most `n_distractors` distractors, so contexts stay short.

    uids are "longtrace_short/<split>/<seed>/<index>".
    """
    walks = sample_walks(
        graph, n, seed=seed, split=split, min_hops=min_hops, max_hops=max_hops,
        hop_weights=hop_weights,
    )  # fmt: skip
    return _packed(
        walks, graph, f"{SOURCE}_short/{split}/{seed}", f"short/{split}/{seed}",
        max_tokens=None, count_tokens=count_tokens, tier1_ratio=tier1_ratio,
        max_distractors=n_distractors,
    )  # fmt: skip


def compact_examples(
    graph: kg.KnowledgeGraph,
    n: int,
    *,
    seed: int,
    min_hops: int = 2,
    max_hops: int = 8,
    split: str,
    n_distractors: int = 2,
) -> list[types.Example]:
    """The cheapest warm-start form of the questions: each gold document cut to the one sentence
    the walk uses (the answer's to its first sentence), plus `n_distractors` Tier-1 documents cut
    to their first sentence, shuffled. A small model learns the lookup-and-copy skill here in a
    fraction of the tokens a full document costs; RL then meets full documents and distractors.

    uids are "longtrace_compact/<split>/<seed>/<index>"; meta["tier"] is "compact".
    """
    walks = sample_walks(graph, n, seed=seed, split=split, min_hops=min_hops, max_hops=max_hops)
    rng = random.Random(f"rlvr_jax.data.longtrace/compact/{split}/{seed}")
    first = lambda e: graph.documents[e].text.split(". ")[0].rstrip(".") + "."  # noqa: E731
    out = []
    for i, walk in enumerate(walks):
        blocks = []
        for e, rel in zip(walk.entities, walk.relations, strict=False):
            entity = graph.entities[e]
            target = graph.entities[graph.target(e, rel)].name
            text = graph.relation(rel, entity.type).sentence.format(s=entity.name, t=target)
            blocks.append((entity.name, text))
        blocks.append((graph.entities[walk.entities[-1]].name, first(walk.entities[-1])))
        pool = tier1_candidates(walk, graph)
        for e in rng.sample(pool, min(n_distractors, len(pool))):
            blocks.append((graph.entities[e].name, first(e)))
        rng.shuffle(blocks)
        context = "\n\n".join(
            f"Document [{k + 1}]: {title}\n{text}" for k, (title, text) in enumerate(blocks)
        )
        uid = f"{SOURCE}_compact/{split}/{seed}/{i}"
        prompt = render_prompt(context, walk.question)
        out.append(
            types.Example(
                uid=uid,
                prompt=prompt,
                answer=walk.answer,
                source=SOURCE,
                meta={"hops": walk.hops, "gold_entities": list(walk.chain), "tier": "compact"},
            )
        )
    return out
