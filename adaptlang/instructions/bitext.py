"""Bitext for alignment-based instructions (Instruct-Align section 3.1 and 4.1).

Sources, by name:

* ``flores``: FLORES-200 devtest, the *pool* part (lines 0-499, ``data.FLORES_POOL``) when a
  benchmark of the run reads the evaluation part (lines 500-1011: perplexity, isotropy,
  flores_4shot/flores_kshot, and lm_eval, whose SIB-200 text is FLORES text); otherwise
  (e.g. only nusax / nusawrites evaluated) all 1012 lines (``flores_part``). (The paper
  combined FLORES dev+devtest, 2009 pairs per language pair; we vendor devtest only, so 500
  or 1012 pairs per language pair; docs/reproduce.md.)
* ``nusax`` (opt-in, not the paper's: metrics.json notes ``bitext_deviation`` when on):
  NusaX MT train + valid (600 rows). Its *test* split is never read: NusaX MT
  row i of a split is sentiment row i of that split, so MT test IS the sentiment test set.
  Which column holds which language is data: ``corpora/nusax/languages.tsv``.
* user files: ``{source: en, target: xx, source_file: a.txt, target_file: b.txt}``, two
  line-aligned text files (``.gz`` allowed). Misalignment (different line counts, an empty
  line on one side only) is refused with the file and line; lines empty on both sides
  are skipped.

Every pair also passes an evaluation guard: a pair whose source or target sentence is an
evaluation sentence of its language (FLORES devtest 500-1011 when they are evaluated, NusaX MT
test, NusaX sentiment test) is dropped and counted, so user files cannot leak evaluation text
into training.
"""
from __future__ import annotations

import csv
import gzip
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ..sources import FLORES_EVAL, FLORES_POOL, flores_lines
from ..errors import UserError, listing, suggest
from ..languages import CORPORA, LanguageSet

BITEXT_SOURCES = ("flores", "nusax")
NUSAX_DEVIATION = ("NusaX MT train/valid used as bitext: not in Instruct-Align (FLORES-200 only, section 4.1); "
                   "these sentences are the NusaX sentiment train/valid rows, the evaluation's domain")
NUSAX = CORPORA / "nusax"
NUSAX_TRAIN_SPLITS = ("train", "valid")  # never "test"
FILE_KEYS = ("source", "target", "source_file", "target_file")


@dataclass(frozen=True)
class Pair:
    source_language: str
    target_language: str
    source: str
    target: str
    origin: str  # e.g. "flores:17", "nusax-train:3", "path/to/file.txt:12"


@lru_cache(maxsize=None)
def nusax_columns() -> dict[str, str]:
    with open(NUSAX / "languages.tsv", encoding="utf-8") as fh:
        return {row["code"]: row["column"] for row in csv.DictReader(fh, delimiter="\t")}


@lru_cache(maxsize=None)
def _nusax_rows(split: str) -> tuple[dict, ...]:
    with open(NUSAX / "mt" / f"{split}.csv", encoding="utf-8", newline="") as fh:
        return tuple(csv.DictReader(fh))


def nusax_sentences(code: str, split: str) -> list[str]:
    column = nusax_columns()[code]
    return [(row[column] or "").strip() for row in _nusax_rows(split)]


# benchmarks that read FLORES-200 devtest 500-1011 (lm_eval: SIB-200's text is FLORES text)
FLORES_READERS = ("perplexity", "isotropy", "flores_4shot", "flores_kshot", "lm_eval")
FLORES_PARTS = {"pool": FLORES_POOL, "eval": FLORES_EVAL, "all": range(FLORES_POOL.start, FLORES_EVAL.stop)}


def flores_part(cfg) -> str:
    """``pool`` when a benchmark of the run reads the FLORES evaluation part, else ``all``."""
    if cfg is None:
        return "pool"
    benchmarks = [str(b) for b in ((cfg.get("eval") or {}).get("benchmarks") or [])]
    return "pool" if any(b in FLORES_READERS for b in benchmarks) else "all"


@lru_cache(maxsize=None)
def _flores(flores_code: str, part: str) -> tuple[str, ...]:
    return tuple(flores_lines(flores_code, FLORES_PARTS[part]))


@lru_cache(maxsize=None)
def evaluation_sentences(code: str, flores_code: str | None, part: str = "pool") -> frozenset[str]:
    """Every evaluation sentence of a language that adaptlang vendors (FLORES devtest 500-1011
    only when training reads the ``pool`` part, i.e. when they are evaluated)."""
    out: set[str] = set()
    if flores_code and part == "pool":
        out.update(_flores(flores_code, "eval"))
    if code in nusax_columns():
        column = nusax_columns()[code]
        out.update(nusax_sentences(code, "test"))
        sentiment = NUSAX / "sentiment" / column / "test.csv"
        if sentiment.is_file():
            with open(sentiment, encoding="utf-8", newline="") as fh:
                out.update((row["text"] or "").strip() for row in csv.DictReader(fh))
    out.discard("")
    return frozenset(out)


def flores_pairs(x: str, y: str, langs: LanguageSet, part: str = "pool") -> list[Pair]:
    fx, fy = langs.check(x).flores, langs.check(y).flores
    if not fx or not fy:
        return []
    return [Pair(x, y, a, b, f"flores:{FLORES_PARTS[part][i]}")
            for i, (a, b) in enumerate(zip(_flores(fx, part), _flores(fy, part)))]


def nusax_pairs(x: str, y: str) -> list[Pair]:
    if x not in nusax_columns() or y not in nusax_columns():
        return []
    out = []
    for split in NUSAX_TRAIN_SPLITS:
        for i, (a, b) in enumerate(zip(nusax_sentences(x, split), nusax_sentences(y, split))):
            if a and b:
                out.append(Pair(x, y, a, b, f"nusax-{split}:{i}"))
    return out


def _read_lines(path: Path) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8", newline="") as fh:
            return [line.rstrip("\r\n") for line in fh]
    except UnicodeDecodeError as exc:
        raise UserError(f"bitext file {path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def read_aligned(source_file: str, target_file: str, x: str, y: str) -> list[Pair]:
    """Two line-aligned files -> pairs; misalignment is a UserError naming file and line."""
    paths = [Path(source_file), Path(target_file)]
    for path in paths:
        if not path.is_file():
            raise UserError(f"bitext file {path} does not exist")
    left, right = (_read_lines(p) for p in paths)
    if len(left) != len(right):
        short, long_ = (0, 1) if len(left) < len(right) else (1, 0)
        n = min(len(left), len(right))
        raise UserError(
            f"misaligned bitext: {paths[0]} has {len(left)} lines but {paths[1]} has {len(right)}; "
            f"line {n + 1} of {paths[long_]} has no counterpart in {paths[short]}")
    out = []
    for i, (a, b) in enumerate(zip(left, right), start=1):
        a, b = a.strip(), b.strip()
        if not a and not b:
            continue
        if not a or not b:
            empty, other = (paths[0], paths[1]) if not a else (paths[1], paths[0])
            raise UserError(f"misaligned bitext: line {i} of {empty} is empty but line {i} of {other} is not")
        out.append(Pair(x, y, a, b, f"{paths[0]}:{i}"))
    if not out:
        raise UserError(f"bitext files {paths[0]} and {paths[1]} hold no sentence pairs")
    return out


def check_files(files) -> list[dict]:
    """Validate the ``files`` option: a list of {source, target, source_file, target_file}."""
    out = []
    for i, entry in enumerate(files or []):
        entry = dict(entry or {})
        for key in entry:
            if key not in FILE_KEYS:
                raise UserError(f"files[{i}]: unknown key '{key}'.{suggest(key, FILE_KEYS)} Valid: {listing(FILE_KEYS)}")
        missing = [k for k in FILE_KEYS if not entry.get(k)]
        if missing:
            raise UserError(f"files[{i}]: missing {listing(missing)} (each entry needs {', '.join(FILE_KEYS)})")
        out.append({k: str(entry[k]) for k in FILE_KEYS})
    return out


def check_sources(sources) -> list[str]:
    sources = list(sources or [])
    for name in sources:
        if name not in BITEXT_SOURCES:
            raise UserError(f"unknown bitext source '{name}'.{suggest(name, BITEXT_SOURCES)} "
                            f"Valid: {listing(BITEXT_SOURCES)} (own files go under 'files')")
    return sources


def collect(new: list[str], known: list[str], sources: list[str], files: list[dict],
            langs: LanguageSet, part: str = "pool") -> tuple[list[Pair], dict]:
    """Pairs (X known, Y new) for every new language, from the named sources and the user's
    files (used whatever the stage's languages), deduplicated, evaluation text removed.

    Returns (pairs, notes) with per-language pair counts, languages without bitext and the
    number of pairs dropped by the evaluation guard."""
    pairs: list[Pair] = []
    for y in new:
        for x in known:
            if x == y:
                continue
            if "flores" in sources:
                pairs += flores_pairs(x, y, langs, part)
            if "nusax" in sources:
                pairs += nusax_pairs(x, y)
    for entry in files:
        langs.check(entry["source"], where="bitext files (source)")
        langs.check(entry["target"], where="bitext files (target)")
        pairs += read_aligned(entry["source_file"], entry["target_file"], entry["source"], entry["target"])
    seen: set[tuple] = set()
    kept: list[Pair] = []
    dropped = 0
    for p in pairs:
        key = (p.source_language, p.target_language, p.source, p.target)
        if key in seen:
            continue
        seen.add(key)
        if (p.source in evaluation_sentences(p.source_language, langs.check(p.source_language).flores, part)
                or p.target in evaluation_sentences(p.target_language, langs.check(p.target_language).flores, part)):
            dropped += 1
            continue
        kept.append(p)
    counts: dict[str, int] = {}
    for p in kept:
        counts[p.target_language] = counts.get(p.target_language, 0) + 1
    notes = {"bitext_pairs": counts, "bitext_dropped_evaluation_overlap": dropped}
    if "flores" in sources:
        notes["bitext_flores_lines"] = "devtest 0-499 (pool)" if part == "pool" else "devtest 0-1011 (not evaluated)"
    if "nusax" in sources:
        notes["bitext_deviation"] = NUSAX_DEVIATION
    missing = [y for y in new if y not in counts]
    if missing:
        notes["bitext_missing"] = {y: f"no {'/'.join(sources) or 'file'} bitext with {listing(known)}" for y in missing}
    return kept, notes
