"""Evaluation set specs (`KIND:PATH[,key=value…]`) to EvalSets: the one parser behind every command.

Specs: `wds:PATH[,split=test]`, `folder:PATH[,names=FILE]`, `imagenet:ROOT`, `imagenet-lt:ROOT`,
`imagenet-ot:ROOT`, `imagenet-organisms:ROOT` (the subsets take `wordnet=DIR`), `inat2021:ROOT[,split=val]`,
`cub:ROOT[,split=test]`, `rare-species:ROOT`, `harvest:WORKDIR` (the harvest's held-out split, read by
kgclip.eval.harvest_set) and `ovad:ROOT[,prompts=SET]` (not an EvalSet: `kgclip eval` resolves the spec
and scores OVAD itself; opening it as a set is an error saying so). Options
come after the path as `,key=value`; keyword arguments give defaults to the kinds that take them,
and the spec's own options override them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from kgclip.eval.sets import EvalSet, EvalSetError

_OPTION = re.compile(r"^([a-z_]+)=(.*)$")


def _wds(path: Path, split: str = "test", name: str | None = None) -> EvalSet:
    from kgclip.eval.wds import read_wds

    return read_wds(path, split, name)


def _folder(path: Path, names: str | None = None, name: str | None = None) -> EvalSet:
    from kgclip.eval.folder import open_folder

    return open_folder(path, Path(names).expanduser() if names else None, name)


def _imagenet(subset: str) -> Callable[..., EvalSet]:
    def open_subset(path: Path, wordnet: str | None = None) -> EvalSet:
        from kgclip.eval.imagenet import open_imagenet

        return open_imagenet(path, subset, Path(wordnet).expanduser() if wordnet else None)

    return open_subset


def _inat(path: Path, split: str = "val") -> EvalSet:
    from kgclip.eval.inat import open_inat

    return open_inat(path, split)


def _cub(path: Path, split: str = "test") -> EvalSet:
    from kgclip.eval.cub import open_cub

    return open_cub(path, split)


def _rare_species(path: Path) -> EvalSet:
    from kgclip.eval.rare_species import open_rare_species

    return open_rare_species(path)


def _harvest(path: Path) -> EvalSet:
    from kgclip.eval.harvest_set import open_harvest

    return open_harvest(path)


def _ovad(path: Path, prompts: str | None = None) -> EvalSet:
    raise EvalSetError(
        f"ovad:{path} is OVAD's attribute benchmark, not a classification or retrieval set, so it cannot "
        "be used here: `kgclip eval MODEL --set ovad:ROOT` scores its box-oracle mAP"
    )


# kind -> (opener, the options it takes)
KINDS: dict[str, tuple[Callable[..., EvalSet], tuple[str, ...]]] = {
    "wds": (_wds, ("split", "name")),
    "folder": (_folder, ("names", "name")),
    "imagenet": (_imagenet("all"), ()),
    "imagenet-lt": (_imagenet("lt"), ("wordnet",)),
    "imagenet-ot": (_imagenet("ot"), ("wordnet",)),
    "imagenet-organisms": (_imagenet("organisms"), ("wordnet",)),
    "inat2021": (_inat, ("split",)),
    "cub": (_cub, ("split",)),
    "rare-species": (_rare_species, ()),
    "harvest": (_harvest, ()),
    "ovad": (_ovad, ("prompts",)),
}
USAGE = (
    "wds:PATH, folder:PATH[,names=FILE], imagenet:ROOT, imagenet-lt:ROOT, imagenet-ot:ROOT, "
    "imagenet-organisms:ROOT, inat2021:ROOT, cub:ROOT, rare-species:ROOT, harvest:WORKDIR, "
    "ovad:ROOT[,prompts=all]"
)


def parse_spec(spec: str) -> tuple[str, Path, dict[str, str]]:
    """(kind, path, options) of a spec; `,key=value` parts are taken from the end (a path may hold commas)."""
    kind, sep, rest = spec.partition(":")
    if not sep or kind not in KINDS:
        raise EvalSetError(f"{spec!r}: not an evaluation set spec; use one of {USAGE}")
    parts = rest.split(",")
    options: dict[str, str] = {}
    while len(parts) > 1 and (match := _OPTION.match(parts[-1])):
        options.setdefault(match.group(1), match.group(2))
        parts.pop()
    path = ",".join(parts)
    if not path:
        raise EvalSetError(f"{spec!r}: no path after {kind}:")
    return kind, Path(path).expanduser(), options


def resolve(spec: str, **opts: str | None) -> tuple[str, Path, dict[str, str]]:
    """(kind, path, options) with the keyword defaults the kind takes under the spec's own options;
    an unknown spec option is an EvalSetError saying what the kind accepts."""
    kind, path, options = parse_spec(spec)
    accepted = KINDS[kind][1]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        takes = ", ".join(accepted) or "no options"
        raise EvalSetError(f"{spec!r}: {kind} takes {takes}, not {', '.join(unknown)}")
    defaults = {k: v for k, v in opts.items() if k in accepted and v is not None}
    return kind, path, defaults | options


def open_set(spec: str, **opts: str | None) -> EvalSet:
    """The EvalSet a spec names; an unknown kind or spec option is an EvalSetError saying what is accepted.

    Keyword options a kind does not take are ignored, so a caller can give one default to every spec.
    """
    kind, path, options = resolve(spec, **opts)
    return KINDS[kind][0](path, **options)
