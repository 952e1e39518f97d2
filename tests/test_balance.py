"""MetaCLIP-style balancing: deterministic, capped per entity and per query, rare entities kept."""

from collections import Counter

from curate_reference import balance
from kgclip.curate.dedup import Group
from kgclip.tables import Fetched, Hit, Query, QueryParams


def group(i: int, query_ids: list[str]) -> Group:
    sha = f"{i:064x}"
    copy = Fetched(f"http://x/{i}", "ok", None, None, "p", "m", 1, 1, 1, 1, 1, "s", sha)
    hits = [Hit(q, "b", 1, copy.url, None, "", None, None, None, None) for q in query_ids]
    return Group(sha, [copy], hits)


QUERIES = {q: Query(q, "entity", q, f"e-{q}", None, QueryParams()) for q in ("common", "rare", "other")}


def corpus() -> list[Group]:
    groups = [group(i, ["common"]) for i in range(200)]
    groups += [group(1000 + i, ["rare", "common"]) for i in range(3)]  # rare pictures also show common
    groups += [group(2000 + i, ["other"]) for i in range(5)]
    return groups


def test_cap_keeps_about_t_per_entity_and_every_rare_picture():
    result = balance(corpus(), QUERIES, max_per_entity=20, max_per_query=0, seed=0)
    after = result.entity_counts_after
    assert 10 <= after["e-common"] <= 35  # sampled with probability 20/203
    assert after["e-rare"] == 3 and after["e-other"] == 5  # under the cap: all kept
    assert result.entity_counts_before == Counter({"e-common": 203, "e-rare": 3, "e-other": 5})
    assert len(result.kept) + len(result.dropped) == 208
    assert {why for _, why in result.dropped} == {"max_per_entity 20"}


def test_same_seed_same_pictures_in_any_order_and_another_seed_differs():
    one = balance(corpus(), QUERIES, 20, 0, seed=0)
    shuffled = balance(list(reversed(corpus())), QUERIES, 20, 0, seed=0)
    other = balance(corpus(), QUERIES, 20, 0, seed=1)

    def keys(result):
        return {g.pixel_sha256 for g in result.kept}

    assert keys(one) == keys(shuffled)
    assert keys(one) != keys(other)


def test_query_cap_and_no_cap():
    capped = balance(corpus(), QUERIES, 0, 10, seed=0)
    assert all(why == "max_per_query 10" for _, why in capped.dropped)
    untouched = balance(corpus(), QUERIES, 0, 0, seed=0)
    assert len(untouched.kept) == 208 and untouched.dropped == []
