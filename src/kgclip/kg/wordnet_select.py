"""WordNet noun synsets below the configured roots, with the method's blacklist (an entities source).

The rules reproduce the authors' LivingThings selection exactly (8,861 synsets, 6,987 leaves),
which pins down three choices that their text leaves open (docs/stages/entities.md):

- the walk *stops* at a blacklisted synset instead of vetoing its whole subtree, so a synset
  that is also reachable on another path stays (diatom.n.01 is a microorganism but also an alga);
- the roots themselves are entities (living_thing.n.01 is one of the 8,861);
- a parent list is ordered as nltk ≤ 3.8 returned hypernyms (sorted by synset name), with parents
  inside the selection first; parents[0] then gives the authors' depths (mean 7.79, median 8, max 14).
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Container, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from kgclip.config import ConfigError, WordNetSource
from kgclip.kg.source import SourceResult
from kgclip.kg.wordnet import (
    HYPERNYM,
    HYPONYM,
    INSTANCE_HYPERNYM,
    INSTANCE_HYPONYM,
    Synset,
    UnknownSynset,
    WordNet,
    database_files,
    find_database,
    open_wordnet,
)
from kgclip.tables import Entity, Rejected
from kgclip.workdir import digest_of

EXCLUDED_SUBTREE = "excluded_subtree"
EXCLUDED_NAME = "excluded_name"
INSTANCE = "instance"
INSTANCE_UNDER = "instance_under"
REASONS = (EXCLUDED_SUBTREE, EXCLUDED_NAME, INSTANCE, INSTANCE_UNDER)


def entity_id(offset: int) -> str:
    return f"wn:n{offset:08d}"


def query_string(lemma: str) -> str:
    """A lemma as people type it: underscores become spaces (`balm_of_Gilead` -> `balm of Gilead`)."""
    return lemma.replace("_", " ")


@dataclass(frozen=True)
class Rules:
    """The configured exclusions, resolved to offsets once so the walk only does set lookups."""

    subtrees: dict[int, str]
    names: frozenset[str]
    include_instances: bool
    instances_under: dict[int, str]

    def verdict(self, wn: WordNet, synset: Synset, parent: Synset) -> tuple[str, str] | None:
        """Why `synset` (reached from `parent`) is dropped, as (reason, detail), or None to keep it.

        Earlier rules win, so a blacklisted imaginary character is reported by name, not as an instance.
        """
        if synset.offset in self.subtrees:
            return EXCLUDED_SUBTREE, self.subtrees[synset.offset]
        matched = next((lemma for lemma in synset.lemmas if lemma.lower() in self.names), None)
        if matched is not None:
            return EXCLUDED_NAME, matched
        if synset.is_instance and not self.include_instances:
            return INSTANCE, parent.name
        if synset.is_instance and self.instances_under:
            under = _first_ancestor_in(wn, synset, self.instances_under)
            if under is not None:
                return INSTANCE_UNDER, self.instances_under[under]
        return None


def _first_ancestor_in(wn: WordNet, synset: Synset, targets: dict[int, str]) -> int | None:
    """The first of `targets` found going up through (instance) hypernyms, breadth first."""
    seen: set[int] = set()
    frontier = list(synset.related(HYPERNYM, INSTANCE_HYPERNYM))
    while frontier:
        nxt = []
        for offset in frontier:
            if offset in targets:
                return offset
            if offset not in seen:
                seen.add(offset)
                nxt.extend(wn.by_offset(offset).related(HYPERNYM, INSTANCE_HYPERNYM))
        frontier = nxt
    return None


def resolve(wn: WordNet, refs: Iterable[str], key: str) -> dict[int, str]:
    """Config synset references (nltk names or wnids) to offsets; an unknown one is a config error."""
    out: dict[int, str] = {}
    for ref in refs:
        try:
            out[wn.synset(ref).offset] = ref
        except UnknownSynset as exc:
            raise ConfigError(f"entities.wordnet.{key}: {exc}") from None
    return out


def rules_from(wn: WordNet, src: WordNetSource) -> Rules:
    return Rules(
        subtrees=resolve(wn, src.exclude_subtrees, "exclude_subtrees"),
        names=frozenset(n.lower().replace(" ", "_") for n in src.exclude_names),
        include_instances=src.include_instances,
        instances_under=resolve(wn, src.drop_instances_under, "drop_instances_under"),
    )


@dataclass
class Selection:
    """The walk's outcome: each kept offset with its root, each dropped one with (reason, detail)."""

    root_of: dict[int, int] = field(default_factory=dict)
    rejects: dict[int, tuple[str, str]] = field(default_factory=dict)


def select(wn: WordNet, roots: list[int], rules: Rules) -> Selection:
    """Walk hyponyms (and instance hyponyms) below each root in config order; the first root to reach
    a synset owns it. A dropped synset is not walked into, but what lies below it stays reachable
    through other parents."""
    sel = Selection()
    for root in roots:
        sel.root_of.setdefault(root, root)
        stack = [root]
        while stack:
            parent = wn.by_offset(stack.pop())
            for offset in parent.related(HYPONYM, INSTANCE_HYPONYM):
                if offset in sel.root_of or offset in sel.rejects:
                    continue
                child = wn.by_offset(offset)
                verdict = rules.verdict(wn, child, parent)
                if verdict is None:
                    sel.root_of[offset] = root
                    stack.append(offset)
                else:
                    sel.rejects[offset] = verdict
    for root in roots:
        sel.rejects.pop(root, None)
    _reject_below(wn, sel)
    return sel


def _reject_below(wn: WordNet, sel: Selection) -> None:
    """Give every synset only reachable through a dropped one its reason, so rejects explain the gap."""
    for head in list(sel.rejects):
        stack = [head]
        while stack:
            for offset in wn.hyponyms(stack.pop()):
                if offset not in sel.root_of and offset not in sel.rejects:
                    sel.rejects[offset] = sel.rejects[head]
                    stack.append(offset)


def ordered_parents(wn: WordNet, synset: Synset, inside: Container[int]) -> list[int]:
    """Hypernyms then instance hypernyms, each sorted by nltk name as nltk ≤ 3.8 returned them,
    with those inside the selection moved first (stable): parents[0] is the primary parent."""
    by_name = [
        sorted(synset.related(symbol), key=lambda o: wn.by_offset(o).name)
        for symbol in (HYPERNYM, INSTANCE_HYPERNYM)
    ]
    merged = by_name[0] + by_name[1]
    return [o for o in merged if o in inside] + [o for o in merged if o not in inside]


def aliases(lemmas: Iterable[str]) -> list[str]:
    """The other lemmas as query strings, case variants merged (first casing seen wins), name excluded."""
    seen: set[str] = set()
    out: list[str] = []
    for lemma in lemmas:
        text = query_string(lemma)
        if text.lower() not in seen:
            seen.add(text.lower())
            out.append(text)
    return out[1:]


def build_entities(wn: WordNet, sel: Selection) -> list[Entity]:
    parents = {o: ordered_parents(wn, wn.by_offset(o), sel.root_of) for o in sel.root_of}
    depth: dict[int, int] = {}

    def depth_of(offset: int) -> int:
        # Chains are at most ~20 steps, so the recursion stays shallow.
        if offset not in depth:
            ps = parents[offset]
            depth[offset] = depth_of(ps[0]) + 1 if ps and ps[0] in sel.root_of else 0
        return depth[offset]

    rows = []
    for offset in sorted(sel.root_of):
        s = wn.by_offset(offset)
        rows.append(
            Entity(
                id=entity_id(offset),
                name=query_string(s.lemmas[0]),
                aliases=aliases(s.lemmas),
                description=s.definition,
                root=entity_id(sel.root_of[offset]),
                parents=[entity_id(p) for p in parents[offset]],
                is_leaf=not any(c in sel.root_of for c in s.related(HYPONYM, INSTANCE_HYPONYM)),
                wordnet=s.wnid,
                wordnet_name=s.name,
                popularity=wn.popularity(offset),
                depth=depth_of(offset),
                sources=["wordnet"],
            )
        )
    return rows


def shared_names(entities: Iterable[Entity]) -> tuple[int, int]:
    """(distinct lower-cased query strings, how many of them name more than one entity)."""
    owners: dict[str, set[str]] = defaultdict(set)
    for e in entities:
        for text in (e.name, *e.aliases):
            owners[text.lower()].add(e.id)
    return len(owners), sum(1 for ids in owners.values() if len(ids) > 1)


def stats_of(wn: WordNet, roots: list[int], sel: Selection, entities: list[Entity]) -> dict:
    """What the manifest keeps: sizes, rejects by reason, depth, and the homonyms queries will meet.

    There is always at least one entity, since every root is kept.
    """
    leaves = [e for e in entities if e.is_leaf]
    depths = [e.depth for e in entities]
    per_root = Counter(sel.root_of.values())
    rejected = dict.fromkeys(REASONS, 0) | Counter(reason for reason, _ in sel.rejects.values())
    all_strings, all_shared = shared_names(entities)
    leaf_strings, leaf_shared = shared_names(leaves)
    return {
        "selected": len(entities),
        "leaves": len(leaves),
        "internal": len(entities) - len(leaves),
        "rejected": rejected,
        "roots": {wn.by_offset(r).name: per_root[r] for r in roots},
        "depth": {
            "mean": round(statistics.fmean(depths), 3),
            "median": statistics.median(depths),
            "max": max(depths),
        },
        "query_strings": {"all": all_strings, "leaves": leaf_strings},
        "shared_names": {"all": all_shared, "leaves": leaf_shared},
        "warnings": list(wn.warnings),
    }


def wordnet_entities(src: WordNetSource) -> SourceResult:
    wn = open_wordnet(src.path)
    roots = list(resolve(wn, src.roots, "roots"))
    sel = select(wn, roots, rules_from(wn, src))
    entities = build_entities(wn, sel)
    rejects = [
        Rejected("entities", entity_id(o), reason, detail) for o, (reason, detail) in sel.rejects.items()
    ]
    stats = stats_of(wn, roots, sel, entities)
    summary = (
        f"{stats['selected']:,} entities ({stats['leaves']:,} leaves), "
        f"{stats['shared_names']['all']:,} shared names"
    )
    return SourceResult(entities, sorted(rejects, key=lambda r: r.item), stats, summary)


def wordnet_fingerprint(src: WordNetSource) -> str:
    return database_fingerprint(find_database(src.path))


def database_fingerprint(folder: Path) -> str:
    """Names, sizes and mtimes of the database files read, so a different WordNet re-runs the stage."""
    parts = []
    for path in database_files(folder):
        st = path.stat()
        parts.append(f"{path.name}:{st.st_size}:{st.st_mtime_ns}")
    return digest_of(*parts)
