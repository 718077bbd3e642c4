"""Where text comes from: corpora and user files, and the fixed held-out split.

Which text serves what (corpora/SOURCES.md, "Which text for what"):
  * language-model training text: NTREX-128 (a different source from FLORES);
  * held-out evaluation text: FLORES-200 devtest lines 500-1011 (the *evaluation part*),
    UDHR for languages FLORES lacks (se, co), never trained on;
  * FLORES-200 devtest lines 0-499 (the *pool*) may serve as bitext for instructions and
    few-shot examples, never for evaluation.
This split is fixed by line number so that nothing evaluated is ever trained on.

Reading goes through ``datasets`` (Arrow, memory-mapped); a language can be pointed at any
local text/JSONL/CSV/Parquet file, a local dataset folder, or a hub dataset
(``hub:wikimedia/wikipedia:20231101.fr``) with ``data.train_files.<code>=...``.
"""
from __future__ import annotations

import csv
import functools
import hashlib
import gzip
import json
from pathlib import Path
from typing import Any

import datasets

from .errors import UserError
from .languages import CORPORA, LanguageSet
from .mapped_pages import release_mapped_pages

FLORES_POOL = range(0, 500)
FLORES_EVAL = range(500, 1012)
datasets.disable_progress_bars()
datasets.logging.set_verbosity_error()


def _reading_error(source: str, exc: BaseException) -> str:
    chain, seen = exc, []
    while chain is not None and chain not in seen:
        seen.append(chain)
        if isinstance(chain, UnicodeDecodeError):
            return f"{source}: not UTF-8 text ({chain.reason} at byte {chain.start})"
        chain = chain.__cause__ or chain.__context__
    root = seen[-1]
    first = (str(root).splitlines() or [""])[0][:300]
    return f"cannot read text from '{source}': {type(root).__name__}: {first}"


SHARD_SUFFIXES = (".txt", ".jsonl", ".json", ".parquet", ".csv")


def shard_files(source: str) -> list[Path]:
    """A local source's files: the file itself, or a folder's text/JSONL/Parquet/CSV shards (any
    depth, optionally .gz), sorted by path."""
    path = Path(source)
    if path.is_file():
        return [path]
    if not path.is_dir():
        return []
    return sorted(p for p in path.rglob("*") if p.is_file()
                  and next((x for x in reversed(p.suffixes) if x != ".gz"), "") in SHARD_SUFFIXES)


def _lines(path: Path):
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        yield from enumerate(fh, 1)


def bad_shard_line(source: str) -> str | None:
    """The first problem of a local source's shards, as ``file:line: why``: a JSON line that is
    not JSON or has no ``text`` field, text that is not UTF-8, a CSV header or a Parquet
    schema without a ``text`` column, a Parquet file that is not one (the plan scans user
    files with it; a failed read names it)."""
    for path in shard_files(source) if not source.startswith("hub:") else []:
        kind = _builder_for(path)
        try:
            if kind == "parquet":
                import pyarrow.parquet as pq

                names = pq.read_schema(path).names
                if "text" not in names:
                    return f"{path}: no 'text' column (columns: {', '.join(names) or 'none'})"
                continue
            first, offset = True, 0
            for number, raw in _lines(path):
                offset += len(raw)
                text = raw.decode("utf-8")
                if kind == "csv" and first:
                    names = next(csv.reader([text.lstrip("\ufeff")]), [])
                    if "text" not in names:
                        return f"{path}:1: no 'text' column in the CSV header (columns: {', '.join(names) or 'none'})"
                    first = False
                elif kind == "json" and ".jsonl" in path.suffixes and text.strip():
                    record = json.loads(text)
                    if first and (not isinstance(record, dict) or "text" not in record):
                        fields = ", ".join(record) if isinstance(record, dict) else type(record).__name__
                        return f"{path}:{number}: no 'text' field (fields: {fields or 'none'})"
                    first = False
        except UnicodeDecodeError as exc:
            byte = offset - len(raw) + exc.start
            return (f"{path}:{number}: not UTF-8 text (line {number}, byte {byte}: {raw[exc.start:exc.start + 4]!r}); "
                    "convert it, e.g. iconv -f latin1 -t utf-8")
        except json.JSONDecodeError as exc:
            return f"{path}:{number}: not a JSON line ({exc.msg} at column {exc.colno})"
        except Exception as exc:  # noqa: BLE001 -- pyarrow's errors: the file is named, its message kept
            return f"{path}: cannot be read as {kind} ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
    return None


def _builder_for(path: Path) -> str:
    suffixes = [s for s in path.suffixes if s != ".gz"]
    ext = suffixes[-1] if suffixes else ".txt"
    return {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}.get(ext, "text")


def _text_column(ds, source: str) -> str:
    names = list(ds.column_names or [])
    if "text" in names:
        return "text"
    raise UserError(f"{source}: no 'text' column (columns: {', '.join(names) or 'none'})")


def check_source(source: str, where: str = "") -> None:
    """A local text source that is missing or empty (the plan checks every user file; a hub
    source is read only when its stage comes)."""
    if source.startswith("hub:"):
        return
    path, at = Path(source), f"{where}: " if where else ""
    if not path.exists():
        raise UserError(f"{at}text source '{source}' does not exist")
    if path.is_file() and path.stat().st_size == 0:
        raise UserError(f"{at}text source '{source}' is empty")


def _open(source: str):
    """A ``datasets`` Dataset (local file: memory-mapped Arrow) or IterableDataset (folder, hub)."""
    try:
        if source.startswith("hub:"):
            name, _, config = source[4:].partition(":")
            return datasets.load_dataset(name, config or None, split="train", streaming=True)
        check_source(source)
        path = Path(source)
        if path.is_dir():
            return _open_shards(source)
        return datasets.load_dataset(_builder_for(path), data_files=str(path), split="train")
    except UserError:
        raise
    except Exception as exc:  # datasets wraps the cause; the user needs its one line
        raise UserError(bad_shard_line(source) or _reading_error(source, exc)) from None


def _open_shards(source: str):
    """A folder streamed lazily: its shards by format (in order of first appearance, each format's
    files in path order), each format's ``text`` column; a folder without shard files (e.g. a
    dataset saved by ``datasets``) as ``datasets`` reads it."""
    kinds: dict[str, list[str]] = {}
    for path in shard_files(source):
        kinds.setdefault(_builder_for(path), []).append(str(path))
    if not kinds:
        return datasets.load_dataset(source, split="train", streaming=True)
    if len(kinds) == 1:
        kind, files = next(iter(kinds.items()))
        return datasets.load_dataset(kind, data_files=files, split="train", streaming=True)

    def rows(groups):
        for kind, files in groups:
            for row in datasets.load_dataset(kind, data_files=files, split="train", streaming=True):
                if "text" not in row:
                    raise UserError(f"{source}: a {kind} shard without a 'text' column ({', '.join(files[:3])})")
                yield {"text": row["text"]}
    return datasets.IterableDataset.from_generator(rows, features=datasets.Features({"text": datasets.Value("string")}),
                                                   gen_kwargs={"groups": list(kinds.items())})


def text_dataset(source: str, limit: int | None = None) -> datasets.Dataset:
    """Non-empty, stripped rows of text (column ``text``) as a memory-mapped Dataset.

    Local files stay on disk (Arrow in the datasets cache), so memory does not grow with the
    corpus; a folder or hub dataset is streamed and written to the cache up to ``limit``."""
    ds = _open(source)
    column = _text_column(ds, source)
    try:
        if isinstance(ds, datasets.IterableDataset):
            def rows():
                n = 0
                for row in ds:
                    text = (row[column] or "").strip()
                    if text:
                        yield {"text": text}
                        n += 1
                        if limit is not None and n >= limit:
                            return
            out = datasets.Dataset.from_generator(rows, features=datasets.Features({"text": datasets.Value("string")}))
        else:
            if column != "text" or len(ds.column_names) > 1:
                ds = ds.select_columns([column]).rename_column(column, "text") if column != "text" else ds.select_columns(["text"])
            out = ds.map(_strip, batched=True).filter(_non_empty, batched=True)
            if limit is not None and len(out) > limit:
                out = out.select(range(limit))
    except UserError:
        raise
    except Exception as exc:
        raise UserError(bad_shard_line(source) or _reading_error(source, exc)) from None
    if len(out) == 0:
        raise UserError(f"text source '{source}' has no non-empty text")
    release_mapped_pages(out)  # the pages that writing and opening it read
    return out


def _strip(batch):
    return {"text": [(t or "").strip() for t in batch["text"]]}


def _non_empty(batch):
    return [bool(t) for t in batch["text"]]


def read_text(source: str, limit: int | None = None) -> list[str]:
    """Non-empty, stripped lines/rows of text from a file, a dataset folder or ``hub:name[:config]``."""
    return list(text_dataset(source, limit)["text"])


def line_limit(cfg: Any) -> int | None:
    """``data.max_lines_per_language`` (null = every line)."""
    value = cfg.data.get("max_lines_per_language")
    return None if value is None else int(value)


def flores_path(code: str) -> Path:
    return CORPORA / "flores200" / "devtest" / f"{code}.devtest.gz"


@functools.lru_cache(maxsize=None)
def _flores_file(flores_code: str) -> tuple[str, ...]:
    lines = read_text(str(flores_path(flores_code)))
    if len(lines) != 1012:
        raise UserError(f"FLORES file for {flores_code} has {len(lines)} lines, expected 1012")
    return tuple(lines)


def flores_lines(flores_code: str, part: range) -> list[str]:
    lines = _flores_file(flores_code)
    return [lines[i] for i in part]


def training_source(code: str, langs: LanguageSet, cfg: Any) -> tuple[str | None, str]:
    """(source, description) for a language's training text, or (None, reason)."""
    files = cfg.data.get("train_files") or {}
    if code in files:
        return str(files[code]), f"user file {files[code]}"
    lang = langs.check(code)
    if lang.ntrex:
        return str(CORPORA / "ntrex128" / f"{lang.ntrex}.txt.gz"), "NTREX-128"
    return None, "no training text vendored (NTREX-128 lacks it; UDHR is kept for evaluation only)"


def heldout_texts(code: str, langs: LanguageSet, cfg: Any, limit: int | None) -> tuple[list[str] | None, str]:
    """Held-out evaluation text: (texts, source) or (None, reason for skipping)."""
    files = cfg.data.get("eval_files") or {}
    if code in files:
        return read_text(str(files[code]), limit), f"user file {files[code]}"
    lang = langs.check(code)
    if lang.flores:
        texts = flores_lines(lang.flores, FLORES_EVAL)
        return (texts[:limit] if limit else texts), "FLORES-200 devtest 500-1011"
    if lang.udhr:
        texts = read_text(str(CORPORA / "udhr" / f"{lang.udhr}.txt.gz"), limit)
        return texts, "UDHR (no FLORES text)"
    return None, "no held-out text (not in FLORES-200 or UDHR)"


def source_fingerprint(source: str, limit: int | None) -> str:
    """What the text of ``source`` (its first ``limit`` rows) depends on: each shard's path, size
    and modification time (a hub source: its name; its revision is the hub's own)."""
    parts = [source, str(limit)]
    if not source.startswith("hub:"):
        for path in shard_files(source):
            stat = path.stat()
            parts.append(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}")
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:16]


def text_for(codes: list[str], languages: LanguageSet, cfg: Any, require: bool = True) -> tuple[dict, dict]:
    """Training text per language as memory-mapped Datasets, and the languages without any
    (``require``: refuse when no language has text)."""
    texts, skipped = {}, {}
    for code in codes:
        source, why = training_source(code, languages, cfg)
        if source is None:
            skipped[code] = why
            continue
        texts[code] = text_dataset(source, line_limit(cfg))
    if not texts and require:
        raise UserError(f"no training text for any of {codes}: " + "; ".join(f"{c}: {w}" for c, w in skipped.items()))
    return texts, skipped
