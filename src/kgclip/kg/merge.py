"""Link WordNet synsets and Wikidata items that denote the same entity, and merge each linked pair.

Evidence, strongest first (docs/stages/merge.md explains the choices and the numbers):

- **P8814** (WordNet 3.1 synset id) through a user-supplied 3.1→3.0 bridge. No 3.1 database is
  installable offline, so without a bridge file P8814 is unused, and the stats say so.
- **taxon name**: the item's P225 is a lemma of the synset ("Panthera leo" is a lemma of lion.n.01).
- **shared names**: label, aliases, taxon name and common names against the synset's lemmas;
  every shared name beyond the first adds a little, since two synonyms rarely both hit a wrong synset.
- **description**: the share of the Wikidata description's content words ("species of big cat" ->
  {big, cat}) found in the synset's gloss and its ancestors' lemmas (lion.n.01 -> big cat -> ...).

Candidates are only synsets sharing a normalised name with the item (an index, never all pairs).
A pair links only when the synset is the item's clear best candidate (a margin over the runner-up)
with a score over a threshold, and the item is the synset's clear best claimant (one-to-one).
A candidate whose binomial shares no word with the item's P225 is never linked. Every other item
stays a separate Wikidata row and is counted by the reason: `no_candidate`, `ambiguous`, `weak`,
`contested`, `taxon_conflict`, `p8814_elsewhere`.
"""

from __future__ import annotations

import csv
import functools
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from kgclip.localfiles import read_regular
from kgclip.tables import Entity

P8814 = "p8814"
TAXON = "taxon"
NAME = "name"
METHODS = (P8814, TAXON, NAME)

NO_CANDIDATE = "no_candidate"
AMBIGUOUS = "ambiguous"
WEAK = "weak"
CONTESTED = "contested"
TAXON_CONFLICT = "taxon_conflict"
P8814_ELSEWHERE = "p8814_elsewhere"
REASONS = (NO_CANDIDATE, AMBIGUOUS, WEAK, CONTESTED, TAXON_CONFLICT, P8814_ELSEWHERE)
CONFLICT = "conflict"

# The score of a (item, synset) pair is the sum of these parts; see docs/stages/merge.md.
P8814_BONUS = 10.0  # an explicit P8814 link through the bridge outranks any name evidence
TAXON_BONUS = 1.0  # the item's P225 is a lemma of the synset
NAME_BONUS = 0.25  # per shared name beyond the first
THRESHOLD = 0.3  # the least score a link needs
MARGIN = 0.2  # the lead the best candidate (and the best claimant) needs over the runner-up

_STOPWORDS = """
    a about above after again against all also an and any are around as at be been being below
    between both but by can could did do does each either etc few for from had has have having he her
    here his how however i if in into is it its itself just like made may more most much must my no
    nor not now of off often on once one only or other others our out over own per rather same she
    should so some such than that the their them then there these they this those through thus to
    too under until up upon usually very was we were what when where whether which while who whom
    whose why will with within without would you your
    species subspecies genus family order class phylum kingdom tribe taxon taxa clade variety
    breed cultivar kind kinds type types sort group common name names known called several various
    many numerous member members used use found native especially chiefly typically generally
"""
# English function words, plus the boilerplate of Wikidata descriptions ("species of ...", "genus of ...")
STOPWORDS = frozenset(_STOPWORDS.split())

_WORD = re.compile(r"[^\W\d_]+")
_HYBRID = re.compile(r"(?<!\w)[×x](?!\w)|×")  # the hybrid sign in "Musa × paradisiaca"
_WN31 = re.compile(r"^(\d{8})-([nvasr])$")
_WNID = re.compile(r"^([nvasr])(\d{8})$")


@dataclass(frozen=True, slots=True)
class Link:
    """A WordNet synset and a Wikidata item merged into one row, with the evidence that decided it."""

    wordnet_id: str
    wikidata_id: str
    method: str
    score: float


@dataclass(frozen=True, slots=True)
class Unlinked:
    """A Wikidata item that stayed a row of its own, why, and the synsets it was weighed against."""

    wikidata_id: str
    reason: str
    candidates: list[str]
    detail: str = ""


@dataclass
class MergeResult:
    entities: list[Entity]
    links: list[Link]
    stats: dict[str, Any]
    unlinked: list[Unlinked] = field(default_factory=list)

    @property
    def summary(self) -> str:
        """One line for the stage summary: links by method, then what stayed single-source and why."""
        s = self.stats
        methods = ", ".join(f"{k} {v:,}" for k, v in s["linked_by"].items() if v)
        kept = ", ".join(f"{s[k]:,} {k}" for k in REASONS if k != NO_CANDIDATE and s[k])
        return (
            f"{s['linked']:,} linked{f' ({methods})' if methods else ''}; "
            f"{s['wordnet_only']:,} WordNet-only, {s['wikidata_only']:,} Wikidata-only"
            f"{f' ({kept} kept apart)' if kept else ''}"
        )


class BridgeError(ValueError):
    """A WordNet 3.1→3.0 mapping file that cannot be read."""


# --- the bridge ---------------------------------------------------------------------------------


def wn31_key(value: str) -> str | None:
    """A WordNet 3.1 synset id as P8814 writes it ("02129165-n"); None when it is not one."""
    text = value.strip().lower()
    if _WN31.match(text):
        return text
    m = _WNID.match(text)
    return f"{m.group(2)}-{m.group(1)}" if m else None


def wnid(value: str) -> str | None:
    """A WordNet 3.0 synset id as an ImageNet wnid ("n02129165"); accepts "02129165-n" too."""
    text = value.strip().lower()
    if _WNID.match(text):
        return text
    m = _WN31.match(text)
    return f"{m.group(2)}{m.group(1)}" if m else None


def load_bridge(path: str | Path) -> dict[str, str]:
    """A WordNet 3.1→3.0 mapping: a CSV or TSV file with a header naming columns `wn31` and `wn30`.

    Ids may be written "02129165-n" or "n02129165"; the result maps "02129165-n" (P8814's form) to
    "n02129165" (Entity.wordnet's form). Blank lines are skipped. A missing file or column, a
    malformed id, or one 3.1 id mapped to two 3.0 ids is a BridgeError naming the file and line.
    """
    path = Path(path)
    try:
        text = read_regular(path).decode("utf-8-sig")
    except OSError as exc:
        raise BridgeError(f"WordNet bridge {path}: cannot read it ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise BridgeError(f"WordNet bridge {path}: not UTF-8 text") from None
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        raise BridgeError(f"WordNet bridge {path}: empty; expected a header with columns wn31 and wn30")
    delimiter = "\t" if "\t" in lines[0] else ","
    rows = csv.reader(lines, delimiter=delimiter)
    header = [h.strip().lower() for h in next(rows)]
    missing = [c for c in ("wn31", "wn30") if c not in header]
    if missing:
        raise BridgeError(
            f"WordNet bridge {path}: the header {header} lacks column(s) {', '.join(missing)}; "
            "expected a CSV or TSV header with columns wn31 and wn30"
        )
    i31, i30 = header.index("wn31"), header.index("wn30")
    out: dict[str, str] = {}
    for number, row in enumerate(rows, start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) <= max(i31, i30):
            raise BridgeError(f"WordNet bridge {path}, line {number}: {len(row)} column(s), too few")
        key, value = wn31_key(row[i31]), wnid(row[i30])
        if key is None:
            raise BridgeError(
                f"WordNet bridge {path}, line {number}: wn31 {row[i31]!r} is not a synset id like 02129165-n"
            )
        if value is None:
            raise BridgeError(
                f"WordNet bridge {path}, line {number}: wn30 {row[i30]!r} is not a synset id "
                "like n02129165 or 02129165-n"
            )
        if out.get(key, value) != value:
            raise BridgeError(
                f"WordNet bridge {path}, line {number}: {key} maps to both {out[key]} and {value}"
            )
        out[key] = value
    return out


# --- text ---------------------------------------------------------------------------------------


def norm_name(text: str) -> str:
    """The form names are compared in: case-folded, hyphens and underscores as spaces, one space."""
    return " ".join(text.casefold().replace("-", " ").replace("_", " ").split())


def norm_taxon(text: str) -> str:
    """A taxon name for case-sensitive comparison: hybrid sign dropped, underscores and spaces unified."""
    return " ".join(_HYBRID.sub(" ", text.replace("_", " ")).split())


@functools.lru_cache(maxsize=1 << 16)
def _stem(word: str) -> str:
    """A crude plural strip, the same on both sides: birds -> bird, fishes -> fish, berries -> berry."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 4 and word.endswith(("ches", "shes", "sses", "xes")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def content_words(text: str) -> set[str]:
    """Lower-cased words of three letters or more, stopwords dropped, plurals stripped."""
    words = (w for w in _WORD.findall(text.casefold()) if len(w) > 2 and w not in STOPWORDS)
    return {_stem(w) for w in words}


# --- the WordNet side ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Taxa:
    """A synset's lemmas that can be taxon names. WordNet writes binomials and genera capitalised
    ("Panthera leo", "Panthera"); a lower-case single word ("bison", "apteryx") is a common noun as
    often as a genus, so only multi-word lemmas also match regardless of case."""

    exact: frozenset[str]  # capitalised lemmas as written
    folded: frozenset[str]  # multi-word lemmas, case-folded
    binomials: tuple[frozenset[str], ...]  # the words of each capitalised multi-word lemma


class WordNetIndex:
    """WordNet rows by normalised name, with each synset's word bag built lazily (only candidates)."""

    def __init__(self, rows: list[Entity]) -> None:
        self.by_id = {e.id: e for e in rows}
        self.by_wnid = {e.wordnet: e.id for e in rows if e.wordnet}
        self.by_name: dict[str, list[str]] = defaultdict(list)
        for e in rows:
            for name in dict.fromkeys(norm_name(n) for n in (e.name, *e.aliases)):
                if name:
                    self.by_name[name].append(e.id)
        self._names: dict[str, frozenset[str]] = {}
        self._taxa: dict[str, Taxa] = {}
        self._lemma_words: dict[str, frozenset[str]] = {}
        self._bags: dict[str, frozenset[str]] = {}

    def names(self, wid: str) -> frozenset[str]:
        if wid not in self._names:
            e = self.by_id[wid]
            self._names[wid] = frozenset(norm_name(n) for n in (e.name, *e.aliases))
        return self._names[wid]

    def taxa(self, wid: str) -> Taxa:
        if wid not in self._taxa:
            e = self.by_id[wid]
            lemmas = [norm_taxon(n) for n in (e.name, *e.aliases)]
            exact = frozenset(n for n in lemmas if n[:1].isupper())
            self._taxa[wid] = Taxa(
                exact=exact,
                folded=frozenset(n.casefold() for n in lemmas if " " in n),
                binomials=tuple(frozenset(n.casefold().split()) for n in sorted(exact) if " " in n),
            )
        return self._taxa[wid]

    def _lemma_bag(self, wid: str) -> frozenset[str]:
        if wid not in self._lemma_words:
            e = self.by_id[wid]
            self._lemma_words[wid] = frozenset(w for n in (e.name, *e.aliases) for w in content_words(n))
        return self._lemma_words[wid]

    def bag(self, wid: str) -> frozenset[str]:
        """Gloss words and every selected ancestor's lemma words: a Wikidata description is mostly
        "<rank> of <higher class>", and the higher class is an ancestor. The synset's own lemmas are
        left out: every candidate shares a name with the item, so they would tell candidates apart
        by nothing ("fox species" would fit the plant red fox, Celosia argentea, as well)."""
        if wid not in self._bags:
            e = self.by_id[wid]
            words = set(content_words(e.description))
            seen = {wid}
            stack = [p for p in e.parents if p in self.by_id]
            while stack:
                pid = stack.pop()
                if pid in seen:
                    continue
                seen.add(pid)
                words |= self._lemma_bag(pid)
                stack.extend(p for p in self.by_id[pid].parents if p in self.by_id and p not in seen)
            self._bags[wid] = frozenset(words)
        return self._bags[wid]


# --- scoring ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Candidate:
    wordnet_id: str
    score: float
    method: str
    shared: int
    gloss: float
    conflict: bool = False  # the two sides name different binomials: never linked


def item_names(item: Entity) -> list[str]:
    texts = [item.name, *item.aliases, *(item.common_names or [])]
    if item.taxon_name:
        texts.append(norm_taxon(item.taxon_name))
    return [n for n in dict.fromkeys(norm_name(t) for t in texts) if n]


def gloss_score(description_words: set[str], bag: frozenset[str]) -> float:
    """The share of the description's content words found in the synset's bag (0 for no words)."""
    if not description_words:
        return 0.0
    return len(description_words & bag) / len(description_words)


def taxon_evidence(taxon: str | None, wn: WordNetIndex, wid: str) -> str | None:
    """TAXON when the item's P225 (`taxon`, normalised by norm_taxon) is a lemma of the synset;
    CONFLICT when both name a binomial and the two share no word (carrion crow, Corvus corone, is not
    black_vulture.n.01, Coragyps atratus, which also has the lemma "carrion crow"). A shared genus or
    epithet is no conflict: taxa get renamed (Puma concolor is WordNet's Felis concolor, Malus
    domestica its Malus pumila)."""
    if not taxon:
        return None
    taxa = wn.taxa(wid)
    if taxon in taxa.exact or (" " in taxon and taxon.casefold() in taxa.folded):
        return TAXON
    if " " in taxon and taxa.binomials:
        words = taxon.casefold().split()
        if not any(b.intersection(words) for b in taxa.binomials):
            return CONFLICT
    return None


def score_candidates(item: Entity, wn: WordNetIndex, bridged: str | None) -> list[Candidate]:
    """Every synset sharing a name with the item (and the bridged one), best first."""
    names = item_names(item)
    ids = dict.fromkeys(wid for n in names for wid in wn.by_name.get(n, ()))
    if bridged is not None:
        ids[bridged] = None
    if not ids:
        return []
    words = content_words(item.description)
    taxon = norm_taxon(item.taxon_name) if item.taxon_name else None
    out = []
    for wid in ids:
        shared = len(wn.names(wid).intersection(names))
        gloss = gloss_score(words, wn.bag(wid))
        score = gloss + NAME_BONUS * max(shared - 1, 0)
        method = NAME
        evidence = taxon_evidence(taxon, wn, wid)
        if evidence == TAXON:
            score += TAXON_BONUS
            method = TAXON
        if wid == bridged:
            score += P8814_BONUS
            method = P8814
        conflict = evidence == CONFLICT and wid != bridged
        out.append(Candidate(wid, round(score, 6), method, shared, round(gloss, 6), conflict))
    return sorted(out, key=lambda c: (c.conflict, -c.score, c.wordnet_id))


def decide(cands: list[Candidate]) -> tuple[Candidate | None, str]:
    """The item's clear best candidate, or None with the reason there is none."""
    if not cands:
        return None, NO_CANDIDATE
    if cands[0].conflict:
        return None, TAXON_CONFLICT
    cands = [c for c in cands if not c.conflict]
    best = cands[0]
    if len(cands) > 1 and best.score - cands[1].score < MARGIN:
        return None, AMBIGUOUS
    if best.score < THRESHOLD:
        return None, WEAK
    return best, ""


def _describe(cands: list[Candidate], limit: int = 5) -> str:
    return ", ".join(
        f"{c.wordnet_id}={'taxon conflict' if c.conflict else f'{c.score:g}'}" for c in cands[:limit]
    )


# --- merging ------------------------------------------------------------------------------------


def merge(wordnet: list[Entity], wikidata: list[Entity], bridge: dict[str, str] | None = None) -> MergeResult:
    """Link WordNet and Wikidata rows that denote the same entity and merge each linked pair into
    one row (the WordNet id, both sources); all other rows pass through, parents rewritten so that
    no row points at a Wikidata id that was merged away. Output is sorted by id."""
    _check_unique(wordnet, wikidata)
    wn = WordNetIndex(wordnet)
    claims: dict[str, list[tuple[Entity, Candidate]]] = defaultdict(list)
    unlinked: dict[str, Unlinked] = {}
    p8814 = Counter(with_p8814=0, resolved=0, not_in_bridge=0, outside_selection=0)
    for item in wikidata:
        bridged = None
        p31 = wn31_key(item.external_ids.get("wordnet31", "") or "")
        if p31 is not None:
            p8814["with_p8814"] += 1
        if p31 is not None and bridge is not None:
            target = bridge.get(p31)
            if target is None:
                p8814["not_in_bridge"] += 1
            elif target not in wn.by_wnid:
                p8814["outside_selection"] += 1
                unlinked[item.id] = Unlinked(
                    item.id, P8814_ELSEWHERE, [], f"P8814 {p31} is {target}, which is not a selected synset"
                )
                continue
            else:
                p8814["resolved"] += 1
                bridged = wn.by_wnid[target]
        cands = score_candidates(item, wn, bridged)
        best, reason = decide(cands)
        if best is None:
            unlinked[item.id] = Unlinked(item.id, reason, [c.wordnet_id for c in cands], _describe(cands))
        else:
            claims[best.wordnet_id].append((item, best))

    links: list[Link] = []
    for wid, claimants in claims.items():
        ranked = sorted(claimants, key=lambda ic: (-ic[1].score, ic[0].id))
        clear = len(ranked) == 1 or ranked[0][1].score - ranked[1][1].score >= MARGIN
        winners = ranked[:1] if clear else []
        for item, cand in winners:
            links.append(Link(wid, item.id, cand.method, cand.score))
        for item, _ in ranked[len(winners) :]:
            others = ", ".join(f"{i.id}={c.score:g}" for i, c in ranked if i.id != item.id)
            unlinked[item.id] = Unlinked(item.id, CONTESTED, [wid], f"{wid} also claimed by {others}")
    links.sort(key=lambda link: link.wordnet_id)

    entities, leaves_lost = _merged_rows(wordnet, wikidata, links)
    stats = _stats(wordnet, wikidata, links, unlinked, bridge, p8814, leaves_lost, len(entities))
    return MergeResult(entities, links, stats, sorted(unlinked.values(), key=lambda u: u.wikidata_id))


def _check_unique(wordnet: list[Entity], wikidata: list[Entity]) -> None:
    ids = Counter(e.id for e in (*wordnet, *wikidata))
    dupes = sorted(i for i, n in ids.items() if n > 1)
    if dupes:
        raise ValueError(f"merge: duplicate entity ids {dupes[:5]}")


def _union(first: Iterable[str], second: Iterable[str], exclude: Iterable[str] = ()) -> list[str]:
    """`first` then the strings of `second` not already there, compared case-insensitively."""
    seen = {s.casefold() for s in exclude}
    out = []
    for s in (*first, *second):
        if s and s.casefold() not in seen:
            seen.add(s.casefold())
            out.append(s)
    return out


def _ids(parents: Iterable[str], renamed: dict[str, str], own: str) -> list[str]:
    return [p for p in dict.fromkeys(renamed.get(p, p) for p in parents) if p != own]


def merge_pair(wn_row: Entity, wd_row: Entity, renamed: dict[str, str]) -> Entity:
    """One row for a linked pair: WordNet's id, name, gloss, root, depth and popularity (the SemCor
    scale the types rule reads), Wikidata's ids and facts, names and parents united."""
    return replace(
        wn_row,
        aliases=_union(wn_row.aliases, [wd_row.name, *wd_row.aliases], exclude=[wn_row.name]),
        parents=_ids([*wn_row.parents, *wd_row.parents], renamed, wn_row.id),
        is_leaf=wn_row.is_leaf and wd_row.is_leaf,
        wikidata=wd_row.wikidata,
        taxon_name=wd_row.taxon_name,
        common_names=list(wd_row.common_names),
        sources=_union(wn_row.sources, wd_row.sources),
        image=wd_row.image,
        external_ids=dict(wd_row.external_ids),
    )


def _merged_rows(
    wordnet: list[Entity], wikidata: list[Entity], links: list[Link]
) -> tuple[list[Entity], int]:
    renamed = {link.wikidata_id: link.wordnet_id for link in links}
    wd_by_id = {e.id: e for e in wikidata}
    partner = {link.wordnet_id: wd_by_id[link.wikidata_id] for link in links}
    rows = []
    leaves_lost = 0
    for e in wordnet:
        if e.id in partner:
            merged = merge_pair(e, partner[e.id], renamed)
            leaves_lost += e.is_leaf and not merged.is_leaf
            rows.append(merged)
        else:
            rows.append(e)
    for e in wikidata:
        if e.id in renamed:
            continue
        parents = _ids(e.parents, renamed, e.id)
        root = renamed.get(e.root, e.root)
        rows.append(e if (parents, root) == (e.parents, e.root) else replace(e, parents=parents, root=root))
    rows.sort(key=lambda e: e.id)
    return rows, leaves_lost


def _stats(
    wordnet: list[Entity],
    wikidata: list[Entity],
    links: list[Link],
    unlinked: dict[str, Unlinked],
    bridge: dict[str, str] | None,
    p8814: Counter,
    leaves_lost: int,
    rows: int,
) -> dict[str, Any]:
    by_method = dict.fromkeys(METHODS, 0) | Counter(link.method for link in links)
    reasons = dict.fromkeys(REASONS, 0) | Counter(u.reason for u in unlinked.values())
    if bridge is None:
        p8814_note = f"unused: no WordNet 3.1→3.0 bridge given ({p8814['with_p8814']} items carry P8814)"
    else:
        p8814_note = f"bridge of {len(bridge)} synsets; {p8814['resolved']} items resolved into the selection"
    return {
        "entities": rows,
        "linked": len(links),
        "linked_by": by_method,
        "wordnet_only": len(wordnet) - len(links),
        "wikidata_only": len(wikidata) - len(links),
        "ambiguous": reasons[AMBIGUOUS],
        "contested": reasons[CONTESTED],
        "weak": reasons[WEAK],
        "no_candidate": reasons[NO_CANDIDATE],
        "taxon_conflict": reasons[TAXON_CONFLICT],
        "p8814_elsewhere": reasons[P8814_ELSEWHERE],
        "wordnet_leaves_now_internal": leaves_lost,
        "p8814": {"bridge": bridge is not None, **dict(p8814), "note": p8814_note},
        "thresholds": {
            "threshold": THRESHOLD,
            "margin": MARGIN,
            "name_bonus": NAME_BONUS,
            "taxon_bonus": TAXON_BONUS,
            "p8814_bonus": P8814_BONUS,
        },
    }
