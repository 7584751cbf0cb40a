"""LongTraceRL data: the knowledge graph, walks, tiered packing and the released-jsonl loader."""

from __future__ import annotations

import json
import random
import re
import time

import pytest

from rlvr_jax.data import longtrace_context as lc
from rlvr_jax.data import longtrace_jsonl as lj
from rlvr_jax.data import longtrace_kg as kg
from rlvr_jax.data import longtrace_names as names

TITLE = re.compile(r"^Document \[(\d+)\]: (.+)$", re.MULTILINE)


@pytest.fixture(scope="module")
def graph() -> kg.KnowledgeGraph:
    return kg.build_graph()


def edit_distance(a: str, b: str) -> int:
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, start=1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


def prompt_docs(graph: kg.KnowledgeGraph, prompt: str) -> list[int]:
    """The entity ids of the documents in a prompt, in order (titles are unique names)."""
    found = TITLE.findall(prompt)
    assert [int(k) for k, _ in found] == list(range(1, len(found) + 1))
    return [graph.by_name[title] for _, title in found]


# --- Graph ---


def test_graph_size_types_and_relations(graph):
    assert len(graph.entities) >= 5000
    assert set(graph.by_type) == set(kg.ENTITY_TYPES)
    assert all(len(ids) > 0 for ids in graph.by_type.values())
    seen = {(f.relation, graph.entities[f.source].type) for f in graph.facts}
    assert seen == {(r.name, r.source_type) for r in kg.RELATIONS}
    for f in graph.facts:  # typed
        rel = graph.relation(f.relation, graph.entities[f.source].type)
        assert graph.entities[f.target].type == rel.target_type
    for e in graph.entities:  # functional relations: exactly one target each
        rels = [r for r, _ in graph.out_edges[e.id]]
        for rel in kg.RELATIONS:
            if rel.source_type == e.type and rel.functional:
                assert rels.count(rel.name) == 1, (e, rel.name)
    assert sum(r.functional for r in kg.RELATIONS) > len(kg.RELATIONS) / 2


def test_graph_builds_fast_and_deterministically(graph):
    start = time.perf_counter()
    again = kg.build_graph()
    assert time.perf_counter() - start < 2.0
    assert again.entities == graph.entities and again.documents == graph.documents
    other = kg.build_graph(seed=1)
    assert other.entities != graph.entities
    with pytest.raises(ValueError, match="num_entities"):
        kg.build_graph(10)


def test_names_are_unique_ascii_words(graph):
    all_names = [e.name for e in graph.entities]
    assert all(re.fullmatch(r"[A-Za-z]+( [A-Za-z]+)*", n) for n in all_names)
    assert len({n.lower() for n in all_names}) == len(all_names)
    assert all(graph.by_name[e.name] == e.id for e in graph.entities)


def test_documents_state_their_facts(graph):
    for doc, e in zip(graph.documents, graph.entities, strict=True):
        assert doc.entity == e.id and doc.title == e.name and e.name in doc.text
    for f in graph.facts:
        assert graph.entities[f.target].name in graph.documents[f.source].text, f
    city = graph.by_type["city"][0]
    country = graph.target(city, "located_in")
    assert f"is a city in {graph.entities[country].name}." in graph.documents[city].text


def test_confusable_names_exist(graph):
    pairs = {tuple(sorted((a, b))) for a, others in graph.twins.items() for b in others}
    one_edit = [
        p for p in pairs if edit_distance(graph.entities[p[0]].name, graph.entities[p[1]].name) == 1
    ]
    assert len(one_edit) >= 100
    people = [graph.entities[i].name.split() for i in graph.by_type["person"]]
    by_first: dict[str, set[str]] = {}
    for first, last in people:
        by_first.setdefault(first, set()).add(last)
    assert max(len(lasts) for lasts in by_first.values()) >= 20  # same first name, other surname
    cross_type = [
        ids for ids in graph.by_word.values() if len({graph.entities[i].type for i in ids}) > 1
    ]
    assert len(cross_type) >= 100  # a place name reused by a company, university or book


# --- Walks ---


@pytest.mark.parametrize("hops", range(2, 9))
def test_walks_have_unique_answers(graph, hops):
    rng = random.Random(hops)
    for _ in range(30):
        walk = kg.sample_walk(graph, hops, rng)
        assert walk.hops == hops and len(walk.entities) == hops + 1 == len(walk.chain)
        assert len(set(walk.entities)) == hops + 1  # no revisits
        assert walk.chain == tuple(graph.entities[i].name for i in walk.entities)
        assert walk.answer == walk.chain[-1]
        # Re-walk: each stated relation has exactly one target, and they end at the answer.
        here = walk.entities[0]
        for rel, nxt in zip(walk.relations, walk.entities[1:], strict=True):
            targets = [t for r, t in graph.out_edges[here] if r == rel]
            assert targets == [nxt]
            here = nxt
        assert graph.entities[kg.follow(graph, walk.entities[0], walk.relations)].name == (
            walk.answer
        )
        start = graph.entities[walk.entities[0]]
        assert walk.question.startswith(f"Start from the {start.type} {start.name}. Take ")
        pos = 0
        for src, rel in zip(walk.entities, walk.relations, strict=False):
            phrase = graph.relation(rel, graph.entities[src].type).phrase
            pos = walk.question.index(phrase, pos) + len(phrase)
        assert walk.question.endswith(f"What is the name of that {graph.entities[here].type}?")


def test_sample_walk_rejects_bad_hops(graph):
    with pytest.raises(ValueError, match="hops"):
        kg.sample_walk(graph, 9, random.Random(0))


# --- Distractors and packing ---


def test_tier1_are_neighbours_or_confusable_same_type(graph):
    rng = random.Random(3)
    for hops in range(2, 9):
        check_tier1(graph, kg.sample_walk(graph, hops, rng))
        check_tier1(graph, kg.sample_walk(graph, hops, rng))


def check_tier1(graph, walk):
    pool = lc.tier1_candidates(walk, graph)
    assert pool and not set(pool) & set(walk.entities)
    path = [graph.entities[i] for i in walk.entities]
    neighbours = {o for e in walk.entities for _, o in graph.out_edges[e] + graph.in_edges[e]}
    for c in pool:
        cand = graph.entities[c]
        if c in neighbours or any(edit_distance(cand.name, p.name) == 1 for p in path):
            continue  # a graph neighbour, or a one-edit twin name (of any type)
        same_type = [p for p in path if p.type == cand.type]
        assert same_type, cand
        shared_target = any(set(graph.out_edges[c]) & set(graph.out_edges[p.id]) for p in same_type)
        shared_word = any(
            set(names.name_words(cand.name)) & set(names.name_words(p.name)) for p in same_type
        )
        assert shared_target or shared_word, cand


@pytest.mark.parametrize("ratio", [0.0, 0.3, 0.5, 1.0])
def test_tier_ratio_respected(graph, ratio):
    examples = lc.make_examples(
        graph, 20, seed=0, max_tokens=800, count_tokens=lc.whitespace_tokens, tier1_ratio=ratio,
        split="train",
    )  # fmt: skip
    n1 = sum(e.meta["n_tier1"] for e in examples)
    n2 = sum(e.meta["n_tier2"] for e in examples)
    assert n1 + n2 > 100
    assert abs(n1 / (n1 + n2) - ratio) < 0.05
    expected_tier = {0.0: "tier2", 0.3: "mixed", 0.5: "mixed", 1.0: "tier1"}[ratio]
    assert {e.meta["tier"] for e in examples} == {expected_tier}
    for ex in examples:  # the packed distractors really are of the tiers the meta counts
        gold = {graph.by_name[n] for n in ex.meta["gold_entities"]}
        docs = prompt_docs(graph, ex.prompt)
        walk_like = kg.Walk(tuple(gold), (), "", "", ())
        pool = set(lc.tier1_candidates(walk_like, graph))
        distractors = [d for d in docs if d not in gold]
        assert sum(d in pool for d in distractors) == ex.meta["n_tier1"]
        assert len(distractors) == ex.meta["n_tier1"] + ex.meta["n_tier2"]


def check_packed(graph, examples, max_tokens, count_tokens):
    for ex in examples:
        meta = ex.meta
        json.dumps(meta)
        assert set(meta) >= {"hops", "gold_entities", "tier1_ratio", "tier", "context_tokens"}
        assert count_tokens(ex.prompt) == meta["context_tokens"] <= max_tokens
        docs = prompt_docs(graph, ex.prompt)
        assert len(docs) == meta["n_docs"] == len(set(docs))
        assert {graph.by_name[n] for n in meta["gold_entities"]} <= set(docs)  # gold all present
        assert len(meta["gold_entities"]) == meta["hops"] + 1
        assert ex.answer == meta["gold_entities"][-1] and ex.source == "longtrace"
        assert ex.prompt.splitlines()[-1] == lc.INSTRUCTION
        assert "Question: Start from the" in ex.prompt


def test_packing_fills_budget_with_whitespace_tokens(graph):
    examples = lc.make_examples(
        graph, 30, seed=1, max_tokens=1500, count_tokens=lc.whitespace_tokens, tier1_ratio=0.5,
        split="train",
    )  # fmt: skip
    check_packed(graph, examples, 1500, lc.whitespace_tokens)
    longest_doc = max(len(d.text.split()) + 4 for d in graph.documents)
    assert all(e.meta["context_tokens"] > 1500 - longest_doc for e in examples)  # greedy fill
    assert len({e.uid for e in examples}) == 30
    # Shuffled: the gold documents are not always first.
    firsts = [prompt_docs(graph, e.prompt)[0] for e in examples]
    assert any(graph.entities[f].name not in e.meta["gold_entities"] for f, e in zip(
        firsts, examples, strict=True))  # fmt: skip


def test_packing_with_tiny_tokenizer(graph):
    from rlvr_jax.models import tokenizer

    tok = tokenizer.load_tiny_tokenizer()
    count = lambda text: len(tok.encode(text))
    examples = lc.make_examples(
        graph, 10, seed=0, max_tokens=2048, count_tokens=count, tier1_ratio=0.5, split="test"
    )
    check_packed(graph, examples, 2048, count)
    assert all(e.meta["context_tokens"] > 1500 for e in examples)


def test_budget_too_small_names_the_uid(graph):
    walk = kg.sample_walk(graph, 8, random.Random(0))
    with pytest.raises(ValueError, match=r"sample-7.*need \d+ tokens.*max_tokens=60"):
        lc.pack_context(
            walk, graph, max_tokens=60, count_tokens=lc.whitespace_tokens, tier1_ratio=0.5,
            rng=random.Random(0), uid="sample-7",
        )  # fmt: skip
    with pytest.raises(ValueError, match=r"longtrace/train/0/\d+"):
        lc.make_examples(
            graph, 5, seed=0, max_tokens=60, count_tokens=lc.whitespace_tokens, tier1_ratio=0.5,
            split="train",
        )  # fmt: skip


def test_examples_deterministic_by_seed(graph):
    kwargs = dict(max_tokens=600, count_tokens=lc.whitespace_tokens, tier1_ratio=0.5)
    a = lc.make_examples(graph, 10, seed=3, split="train", **kwargs)
    b = lc.make_examples(graph, 10, seed=3, split="train", **kwargs)
    c = lc.make_examples(graph, 10, seed=4, split="train", **kwargs)
    assert a == b
    assert [e.prompt for e in a] != [e.prompt for e in c]


def test_splits_do_not_share_walks(graph):
    kwargs = dict(max_tokens=400, count_tokens=lc.whitespace_tokens, tier1_ratio=0.5)
    train = lc.make_examples(graph, 100, seed=0, split="train", **kwargs)
    test = lc.make_examples(graph, 100, seed=0, split="test", **kwargs)
    starts = lambda exs: {e.meta["gold_entities"][0] for e in exs}
    assert not starts(train) & starts(test)
    assert all(lc.is_test_start(s) for s in starts(test))
    assert not any(lc.is_test_start(s) for s in starts(train))
    with pytest.raises(ValueError, match="split"):
        lc.make_examples(graph, 1, seed=0, split="val", **kwargs)


def test_hop_counts_uniform_or_weighted(graph):
    walks = lc.sample_walks(graph, 700, seed=0, split="train")
    counts = [sum(w.hops == h for w in walks) for h in range(2, 9)]
    assert min(counts) > 60 and max(counts) < 140, counts
    walks = lc.sample_walks(graph, 50, seed=0, split="train", min_hops=3, max_hops=5,
                            hop_weights=[0, 1, 3])  # fmt: skip
    assert {w.hops for w in walks} <= {4, 5} and sum(w.hops == 5 for w in walks) > 25
    assert len({w.question for w in walks}) == 50


def test_short_examples_share_questions(graph):
    long = lc.make_examples(
        graph, 10, seed=2, max_tokens=1200, count_tokens=lc.whitespace_tokens, tier1_ratio=0.5,
        split="train",
    )  # fmt: skip
    short = lc.short_examples(graph, 10, seed=2, split="train")
    for lo, sh in zip(long, short, strict=True):
        question = lo.prompt.split("Question: ")[1]
        assert sh.prompt.endswith(question) and sh.answer == lo.answer
        assert sh.meta["hops"] + 1 <= sh.meta["n_docs"] <= sh.meta["hops"] + 3
        assert sh.meta["context_tokens"] < lo.meta["context_tokens"]
        docs = prompt_docs(graph, sh.prompt)
        assert {graph.by_name[n] for n in sh.meta["gold_entities"]} <= set(docs)
    gold_only = lc.short_examples(graph, 3, seed=2, split="train", n_distractors=0)
    assert all(e.meta["n_docs"] == e.meta["hops"] + 1 for e in gold_only)


# --- Released jsonl ---


def row(**changes):
    base = {
        "source": "longqa",
        "input_messages": [
            {"role": "system", "content": "You read long documents."},
            {"role": "user", "content": "Document 1 ... Question: who?"},
        ],
        "label": "Ada Lovelace",
        "metadata": {"extra_reward_info": {"rubrics": ["London", "Ada Lovelace"]}},
    }
    base.update(changes)
    return base


def write(tmp_path, lines):
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return str(path)


def test_load_jsonl_happy_path(tmp_path):
    with_hops = row(metadata={"extra_reward_info": {"rubrics": ["A"], "hops": 3}})
    path = write(tmp_path, [row(), "", with_hops])
    first, second = lj.load_jsonl(path)
    assert first.prompt == "Document 1 ... Question: who?" and first.answer == "Ada Lovelace"
    assert first.source == "longqa" and first.uid == "data.jsonl/1"
    assert first.meta == {
        "gold_entities": ["London", "Ada Lovelace"], "hops": None,
        "system": "You read long documents.",
    }  # fmt: skip
    assert second.meta["hops"] == 3 and second.uid == "data.jsonl/3"
    json.dumps(first.meta)


@pytest.mark.parametrize(
    "bad, field",
    [
        ("{not json", "not valid JSON"),
        (row(label=None), "label"),
        ({k: v for k, v in row().items() if k != "label"}, "label"),
        (row(metadata={"extra_reward_info": {}}), "rubrics"),
        (row(metadata={}), "rubrics"),
        (row(metadata={"extra_reward_info": {"rubrics": [{"entity": "A"}]}}), "rubrics"),
        (row(input_messages=[{"role": "system", "content": "hi"}]), "user message"),
        (row(input_messages="text"), "input_messages"),
    ],
)
def test_load_jsonl_errors_name_file_and_line(tmp_path, bad, field):
    path = write(tmp_path, [row(), bad])
    with pytest.raises(ValueError, match=re.escape(f"{path}:2: ") + f".*{field}"):
        lj.load_jsonl(path)


def test_load_jsonl_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        lj.load_jsonl(tmp_path / "absent.jsonl")


def test_compact_examples_hold_each_hops_sentence_and_nothing_of_the_rest(graph):
    examples = lc.compact_examples(graph, 40, seed=5, split="train", max_hops=4, n_distractors=2)
    for ex in examples:
        chain, hops = ex.meta["gold_entities"], ex.meta["hops"]
        assert len(chain) == hops + 1 and ex.answer == chain[-1]
        blocks = ex.prompt.split("\n\nQuestion:")[0].split("\n\n")
        assert len(blocks) == hops + 1 + 2  # every gold entity once, two distractors
        titles = [b.split("\n")[0].split(": ", 1)[1] for b in blocks]
        assert set(chain) <= set(titles)
        for name, nxt in zip(chain, chain[1:], strict=False):  # the hop's target is in its block
            assert nxt in blocks[titles.index(name)]
        assert all(len(b.split("\n")) == 2 for b in blocks)  # a title and one sentence
    # Deterministic by seed.
    again = lc.compact_examples(graph, 40, seed=5, split="train", max_hops=4, n_distractors=2)
    assert [e.prompt for e in again] == [e.prompt for e in examples]
