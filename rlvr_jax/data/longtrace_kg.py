"""A synthetic knowledge graph for LongTraceRL-style multi-hop questions, and random walks over it.

Entities (people, cities, countries, rivers, universities, companies, books) are linked by typed
relations. Every relation a walk may follow is functional (one target per source), so a walk has
exactly one answer. Names are confusable on purpose: they are built from a small pool of
syllables, some are one edit apart ("Doravel" and "Doravell"), people share first names, and
companies, universities and books borrow the names of places. Each entity has a short document
stating its facts. Everything is deterministic for a given (num_entities, seed).
"""

from __future__ import annotations

import dataclasses
import random
import types as pytypes
from collections.abc import Mapping, Sequence

from rlvr_jax.data import longtrace_names as names

# Entity types and their share of the graph (person takes the remainder).
TYPE_SHARES = (
    ("country", 0.01), ("city", 0.15), ("river", 0.05), ("university", 0.05),
    ("company", 0.12), ("book", 0.20), ("person", 0.0),
)  # fmt: skip
ENTITY_TYPES = tuple(t for t, _ in TYPE_SHARES)
MIN_ENTITIES = 300
MIN_HOPS, MAX_HOPS = 2, 8


@dataclasses.dataclass(frozen=True)
class Relation:
    """A typed relation. `phrase` names the target in a question ("the city where that person was
    born"); `sentence` states the fact in the source's document ({s} source, {t} target)."""

    name: str
    source_type: str
    target_type: str
    functional: bool
    phrase: str
    sentence: str


# The first relation of each source type also introduces the entity in its document. `located_in`
# and `founded_by` are shared by several source types on purpose.
RELATIONS = (
    Relation("located_in", "city", "country", True,
             "the country where that city is located", "{s} is a city in {t}."),
    Relation("on_river", "city", "river", True,
             "the river that city lies on", "It lies on the river {t}."),
    Relation("capital", "country", "city", True,
             "the capital city of that country", "{s} is a country whose capital is {t}."),
    Relation("borders", "country", "country", False, "", "It borders {t}."),
    Relation("flows_through", "river", "country", True,
             "the country that river flows through", "{s} is a river that flows through {t}."),
    Relation("located_in", "university", "city", True,
             "the city where that university is located",
             "{s} is a university located in the city of {t}."),
    Relation("founded_by", "university", "person", True,
             "the person who founded that university", "It was founded by {t}."),
    Relation("headquartered_in", "company", "city", True,
             "the city where that company is headquartered",
             "{s} is a company headquartered in {t}."),
    Relation("founded_by", "company", "person", True,
             "the person who founded that company", "It was founded by {t}."),
    Relation("born_in", "person", "city", True,
             "the city where that person was born", "{s} is a person who was born in {t}."),
    Relation("studied_at", "person", "university", True,
             "the university where that person studied", "{s} studied at {t}."),
    Relation("works_for", "person", "company", True,
             "the company that person works for", "{s} works for {t}."),
    Relation("citizen_of", "person", "country", True,
             "the country of which that person is a citizen", "{s} is a citizen of {t}."),
    Relation("author", "book", "person", True,
             "the person who wrote that book", "{s} is a book written by {t}."),
    Relation("published_by", "book", "company", True,
             "the company that published that book", "It was published by {t}."),
)  # fmt: skip
ATTRIBUTES = {  # one numeric sentence per type: documents read less like bare fact lists
    "country": ("It has about {n} million people.", 1, 90),
    "city": ("It has about {n} thousand inhabitants.", 5, 900),
    "river": ("It is {n} km long.", 40, 3000),
    "university": ("It has about {n} thousand students.", 1, 60),
    "company": ("It was established in {n}.", 1820, 2015),
    "person": ("{s} was born in the year {n}.", 1900, 2000),
    "book": ("It first appeared in {n}.", 1850, 2020),
}


@dataclasses.dataclass(frozen=True)
class Entity:
    id: int
    name: str
    type: str


@dataclasses.dataclass(frozen=True)
class Fact:
    source: int
    relation: str
    target: int


@dataclasses.dataclass(frozen=True)
class Document:
    """The document of one entity: its name as title and a few sentences of its facts."""

    entity: int
    title: str
    text: str


@dataclasses.dataclass(frozen=True, eq=False)
class KnowledgeGraph:
    """Entities, facts, one document per entity (`documents[i]` is entity i's) and the indexes.

    `out_edges[i]` / `in_edges[i]` are (relation, other entity) pairs; `by_word` maps a lowercased,
    distinctive name word to the entities whose names contain it; `twins[i]` are the entities whose
    names are one edit away from entity i's (made on purpose).
    """

    entities: tuple[Entity, ...]
    facts: tuple[Fact, ...]
    documents: tuple[Document, ...]
    out_edges: tuple[tuple[tuple[str, int], ...], ...]
    in_edges: tuple[tuple[tuple[str, int], ...], ...]
    by_name: Mapping[str, int]
    by_type: Mapping[str, tuple[int, ...]]
    by_word: Mapping[str, tuple[int, ...]]
    twins: Mapping[int, tuple[int, ...]]

    def relation(self, name: str, source_type: str) -> Relation:
        return _RELATION_BY_KEY[(name, source_type)]

    def target(self, entity: int, relation: str) -> int:
        """The one target of a functional `relation` from `entity`; KeyError if it has none."""
        if not _RELATION_BY_KEY[(relation, self.entities[entity].type)].functional:
            raise KeyError(f"{relation} is not functional")
        for rel, other in self.out_edges[entity]:
            if rel == relation:
                return other
        raise KeyError(f"{self.entities[entity].name} has no {relation}")


_RELATION_BY_KEY = {(r.name, r.source_type): r for r in RELATIONS}
_RELATIONS_FROM = {t: tuple(r for r in RELATIONS if r.source_type == t) for t in ENTITY_TYPES}


@dataclasses.dataclass(frozen=True)
class Walk:
    """A multi-hop question: start at `entities[0]`, follow `relations`, answer the last name.

    `chain` holds the names of every entity on the path, start and answer included: the gold
    entities of the rubric.
    """

    entities: tuple[int, ...]
    relations: tuple[str, ...]
    question: str
    answer: str
    chain: tuple[str, ...]

    @property
    def hops(self) -> int:
        return len(self.relations)


# --- Graph ---


def _type_counts(num_entities: int) -> dict[str, int]:
    counts = {t: int(num_entities * share) for t, share in TYPE_SHARES}
    counts["country"] = max(counts["country"], 8)
    counts["person"] = num_entities - sum(counts.values())
    return counts


def build_graph(num_entities: int = 6000, seed: int = 0) -> KnowledgeGraph:
    """A graph of `num_entities` entities (at least MIN_ENTITIES), the same for the same seed."""
    if num_entities < MIN_ENTITIES:
        raise ValueError(f"num_entities must be >= {MIN_ENTITIES}, got {num_entities}")
    rng = random.Random(f"rlvr_jax.data.longtrace_kg/{num_entities}/{seed}")
    namer = names.Namer(rng)
    entities: list[Entity] = []
    by_type: dict[str, list[int]] = {t: [] for t in ENTITY_TYPES}
    for kind, count in _type_counts(num_entities).items():  # places first: later names borrow them
        for _ in range(count):
            entity = Entity(len(entities), namer.draw(kind), kind)
            entities.append(entity)
            by_type[kind].append(entity.id)

    # --- Facts: places cohere (a city's river flows through its country) where possible ---
    pick = lambda kind: rng.choice(by_type[kind])
    targets: dict[tuple[int, str], int] = {}
    facts: list[Fact] = []
    countries = by_type["country"]
    rivers_in: dict[int, list[int]] = {c: [] for c in countries}
    cities_in: dict[int, list[int]] = {c: [] for c in countries}
    for i, river in enumerate(by_type["river"]):
        country = countries[i] if i < len(countries) else pick("country")
        targets[(river, "flows_through")] = country
        rivers_in[country].append(river)
    for i, city in enumerate(by_type["city"]):
        country = countries[i] if i < len(countries) else pick("country")
        targets[(city, "located_in")] = country
        targets[(city, "on_river")] = rng.choice(rivers_in[country] or by_type["river"])
        cities_in[country].append(city)
    for country in countries:
        targets[(country, "capital")] = rng.choice(cities_in[country])
    for uni in by_type["university"]:
        targets[(uni, "located_in")], targets[(uni, "founded_by")] = pick("city"), pick("person")
    for company in by_type["company"]:
        targets[(company, "headquartered_in")] = pick("city")
        targets[(company, "founded_by")] = pick("person")
    for person in by_type["person"]:
        city = pick("city")
        targets[(person, "born_in")] = city
        targets[(person, "citizen_of")] = targets[(city, "located_in")]
        targets[(person, "studied_at")], targets[(person, "works_for")] = (
            pick("university"),
            pick("company"),
        )
    for book in by_type["book"]:
        targets[(book, "author")], targets[(book, "published_by")] = pick("person"), pick("company")
    for entity in entities:  # schema order, so documents read in a fixed order
        for rel in _RELATIONS_FROM[entity.type]:
            if rel.functional:
                facts.append(Fact(entity.id, rel.name, targets[(entity.id, rel.name)]))
    for country in countries:
        others = [c for c in countries if c != country]
        for other in rng.sample(others, k=min(2, len(others))):
            facts.append(Fact(country, "borders", other))

    # --- Indexes ---
    out_edges: list[list[tuple[str, int]]] = [[] for _ in entities]
    in_edges: list[list[tuple[str, int]]] = [[] for _ in entities]
    for fact in facts:
        out_edges[fact.source].append((fact.relation, fact.target))
        in_edges[fact.target].append((fact.relation, fact.source))
    by_name = {e.name: e.id for e in entities}
    by_word: dict[str, list[int]] = {}
    for e in entities:
        for word in dict.fromkeys(names.name_words(e.name)):
            by_word.setdefault(word, []).append(e.id)
    twins: dict[int, list[int]] = {}
    for name, twin in namer.twin_of.items():
        a, b = by_name[name], by_name[twin]
        twins.setdefault(a, []).append(b)
        twins.setdefault(b, []).append(a)
    documents = tuple(_document(e, out_edges[e.id], entities, rng) for e in entities)
    freeze = lambda d: pytypes.MappingProxyType({k: tuple(dict.fromkeys(v)) for k, v in d.items()})
    return KnowledgeGraph(
        entities=tuple(entities),
        facts=tuple(facts),
        documents=documents,
        out_edges=tuple(tuple(edges) for edges in out_edges),
        in_edges=tuple(tuple(edges) for edges in in_edges),
        by_name=pytypes.MappingProxyType(by_name),
        by_type=freeze(by_type),
        by_word=freeze(by_word),
        twins=freeze(twins),
    )


def _document(
    entity: Entity, edges: Sequence[tuple[str, int]], entities: Sequence[Entity], rng: random.Random
) -> Document:
    sentences, borders = [], []
    for rel_name, target in edges:
        if rel_name == "borders":
            borders.append(entities[target].name)
            continue
        rel = _RELATION_BY_KEY[(rel_name, entity.type)]
        sentences.append(rel.sentence.format(s=entity.name, t=entities[target].name))
    if borders:
        sentences.append(f"It borders {' and '.join(borders)}.")
    template, low, high = ATTRIBUTES[entity.type]
    sentences.append(template.format(s=entity.name, n=rng.randint(low, high)))
    return Document(entity.id, entity.name, " ".join(sentences))


# --- Walks ---


def question_for(graph: KnowledgeGraph, entities: Sequence[int], relations: Sequence[str]) -> str:
    """The walk in words: the start by type and name, each relation's phrase, then the ask."""
    start = graph.entities[entities[0]]
    steps = [
        graph.relation(rel, graph.entities[src].type).phrase
        for src, rel in zip(entities[:-1], relations, strict=True)
    ]
    last = graph.entities[entities[-1]].type
    return (
        f"Start from the {start.type} {start.name}. Take {', then '.join(steps)}. "
        f"What is the name of that {last}?"
    )


def sample_walk(
    graph: KnowledgeGraph,
    hops: int,
    rng: random.Random,
    *,
    starts: Sequence[int] | None = None,
    max_tries: int = 1000,
) -> Walk:
    """A walk of `hops` functional relations from a random start (drawn from `starts` if given).

    Walks that revisit an entity are rejected, so the chain has hops + 1 distinct entities; names
    are unique and every relation followed is functional, so the answer is unique.
    """
    if not MIN_HOPS <= hops <= MAX_HOPS:
        raise ValueError(f"hops must be in [{MIN_HOPS}, {MAX_HOPS}], got {hops}")
    pool = starts if starts is not None else range(len(graph.entities))
    for _ in range(max_tries):
        path, rels = [rng.choice(pool)], []
        while len(rels) < hops:
            here = path[-1]
            options = [
                (rel, t)
                for rel, t in graph.out_edges[here]
                if graph.relation(rel, graph.entities[here].type).functional and t not in path
            ]
            if not options:
                break
            rel, nxt = rng.choice(options)
            path.append(nxt)
            rels.append(rel)
        if len(rels) == hops:
            chain = tuple(graph.entities[i].name for i in path)
            question = question_for(graph, path, rels)
            return Walk(tuple(path), tuple(rels), question, chain[-1], chain)
    raise RuntimeError(f"no {hops}-hop walk without revisits after {max_tries} tries")


def follow(graph: KnowledgeGraph, start: int, relations: Sequence[str]) -> int:
    """The entity reached from `start` by following functional `relations` (re-walks a Walk)."""
    here = start
    for rel in relations:
        here = graph.target(here, rel)
    return here
