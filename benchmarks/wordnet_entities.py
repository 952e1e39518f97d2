"""Cold-start time of the entities stage (WordNet 3.0 living things) against nltk doing the same walk.

Each side runs in a fresh process, with the page cache dropped first when we are allowed to
(root), so "cold" means what a user sees on a first run: interpreter, imports, reading the
database, selecting, and (for kgclip) writing the table. Both must select the authors' 8,861.

    .venv/bin/pip install -r requirements/bench.txt   # the peer (nltk); not a kgclip dependency
    .venv/bin/python benchmarks/wordnet_entities.py [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conditions import describe, version_of

WORDNET = Path("/usr/share/wordnet")
# The lexicographer files in their numbering (environment.md §1.3): nltk needs them, Debian lacks the file.
NOUN_FILES = (
    "Tops",
    "act",
    "animal",
    "artifact",
    "attribute",
    "body",
    "cognition",
    "communication",
    "event",
    "feeling",
    "food",
    "group",
    "location",
    "motive",
    "object",
    "person",
    "phenomenon",
    "plant",
    "possession",
    "process",
    "quantity",
    "relation",
    "shape",
    "state",
    "substance",
    "time",
)
VERB_FILES = (
    "body",
    "change",
    "cognition",
    "communication",
    "competition",
    "consumption",
    "contact",
    "creation",
    "emotion",
    "motion",
    "perception",
    "possession",
    "social",
    "stative",
    "weather",
)
LEXNAMES = [
    "adj.all 3",
    "adj.pert 3",
    "adv.all 4",
    *(f"noun.{n} 1" for n in NOUN_FILES),
    *(f"verb.{n} 2" for n in VERB_FILES),
    "adj.ppl 3",
]

KGCLIP = """
import sys, time
t = time.perf_counter()
from pathlib import Path
from kgclip.config import load
from kgclip.kg import entities
from kgclip.pipeline import StageContext
from kgclip.workdir import Workdir
result = entities.run(StageContext(load("livingthings"), Workdir(Path(sys.argv[1]))))
print(result.rows, result.stats["wordnet"]["leaves"], time.perf_counter() - t)
"""

# The authors' walk (method.md §1) with nltk: hyponyms recursively, stopping at blacklisted synsets.
# The roots and blacklists come as one JSON argument, read by the parent from kgclip's config: the peer
# imports nothing of kgclip and parses no TOML, only what nltk needs.
NLTK = """
import sys, time
t = time.perf_counter()
import json
from nltk.corpus import wordnet as wn
src = json.loads(sys.argv[1])
stop = {wn.synset(n) for n in src["exclude_subtrees"]}
names = set(src["exclude_names"])
seen, stack = set(), [wn.synset(r) for r in src["roots"]]
while stack:
    s = stack.pop()
    if s in seen or s in stop or names & {l.lower() for l in s.lemma_names()}:
        continue
    seen.add(s)
    stack.extend(s.hyponyms())
leaves = sum(1 for s in seen if not any(h in seen for h in s.hyponyms()))
kgclip = any(m.split(".")[0] == "kgclip" for m in sys.modules)
print(len(seen), leaves, time.perf_counter() - t, kgclip, "tomllib" in sys.modules)
"""


def walk_arguments() -> str:
    """The selection the entities stage makes (livingthings config), as the nltk side's one argument."""
    import json

    from kgclip.config import load

    src = load("livingthings").entities.wordnet
    return json.dumps(
        {
            "roots": list(src.roots),
            "exclude_subtrees": list(src.exclude_subtrees),
            "exclude_names": list(src.exclude_names),
        }
    )


def nltk_tree(root: Path) -> Path:
    """Debian's files in an nltk_data layout plus the missing `lexnames` (environment.md §1.3)."""
    corpus = root / "corpora" / "wordnet"
    corpus.mkdir(parents=True)
    for path in WORDNET.iterdir():
        if path.name.startswith(("data.", "index.", "cntlist.rev")) or path.suffix == ".exc":
            shutil.copy(path, corpus / path.name)
    (corpus / "lexnames").write_text(
        "".join(f"{i:02d}\t{line.replace(' ', chr(9))}\n" for i, line in enumerate(LEXNAMES))
    )
    return root


def drop_caches() -> bool:
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def timed(code: str, args: list[str], env: dict[str, str]) -> tuple[float, str]:
    cold = drop_caches()
    began = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, check=True
    )
    wall = time.perf_counter() - began
    return wall, out.stdout.strip() + ("" if cold else " (warm: page cache not dropped)")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    try:
        import nltk  # noqa: F401
    except ImportError:
        sys.exit("the peer is missing: .venv/bin/pip install -r requirements/bench.txt")
    walk = walk_arguments()
    print(
        describe(
            nltk=version_of("nltk"),
            wordnet=f"{WORDNET} (Debian wordnet-base), the same files for both",
            cold="page cache dropped before every run"
            if os.geteuid() == 0
            else "NO: not root, page cache kept",
            runs=f"{args.runs} of each, alternating, each in a fresh process; medians",
            peer_input="roots and blacklists as one JSON argument (no kgclip import, no TOML)",
        )
    )
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "NLTK_DATA": str(nltk_tree(Path(tmp) / "nltk_data"))}
        kg, nl = [], []
        for run in range(args.runs):
            work = Path(tmp) / f"w{run}"
            wall, out = timed(KGCLIP, [str(work)], env)
            kg.append(wall)
            print(f"kgclip run {run}: {wall:.2f}s wall; selected, leaves, in-process s = {out}")
            wall, out = timed(NLTK, [walk], env)
            nl.append(wall)
            print(
                f"nltk   run {run}: {wall:.2f}s wall; selected, leaves, in-process s, imported kgclip, "
                f"imported tomllib = {out}"
            )
    k, n = statistics.median(kg), statistics.median(nl)
    per_run = sorted(b / a for a, b in zip(kg, nl, strict=True))
    print(f"\nmedian cold wall time: kgclip entities stage {k:.2f}s, nltk walk {n:.2f}s")
    print(
        f"ratio nltk / kgclip = {n / k:.2f}x (higher is better for kgclip); target: kgclip < 3 s -> "
        f"{'met' if k < 3 else 'NOT met'}; per run {', '.join(f'{r:.2f}x' for r in per_run)}"
    )


if __name__ == "__main__":
    main()
