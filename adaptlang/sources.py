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

import functools
from pathlib import Path
from typing import Any

import datasets

from .errors import UserError
from .languages import CORPORA, LanguageSet

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
            return datasets.load_dataset(str(path), split="train", streaming=True)
        return datasets.load_dataset(_builder_for(path), data_files=str(path), split="train")
    except UserError:
        raise
    except Exception as exc:  # datasets wraps the cause; the user needs its one line
        raise UserError(_reading_error(source, exc)) from None


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
        raise UserError(_reading_error(source, exc)) from None
    if len(out) == 0:
        raise UserError(f"text source '{source}' has no non-empty text")
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
