"""Corpora, the fixed held-out split, tokenization into training examples, example streams.

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
import random
import uuid
from pathlib import Path
from typing import Any, Iterator, Sequence

import datasets
import torch

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


def _open(source: str):
    """A ``datasets`` Dataset (local file: memory-mapped Arrow) or IterableDataset (folder, hub)."""
    try:
        if source.startswith("hub:"):
            name, _, config = source[4:].partition(":")
            return datasets.load_dataset(name, config or None, split="train", streaming=True)
        path = Path(source)
        if not path.exists():
            raise UserError(f"text source '{source}' does not exist")
        if path.is_dir():
            return datasets.load_dataset(str(path), split="train", streaming=True)
        if path.stat().st_size == 0:
            raise UserError(f"text source '{source}' is empty")
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


# --- examples -----------------------------------------------------------------------------

def lm_examples(texts, tokenizer, block_size: int, cache_dir: str | None = None) -> datasets.Dataset:
    """Causal-LM blocks: texts tokenized, joined with EOS, cut into ``block_size`` tokens.

    ``texts`` is a list or a Dataset with a ``text`` column. With ``cache_dir`` the blocks
    are written there as Arrow and memory-mapped (memory stays flat as the corpus grows);
    without, they are kept in memory. Blocks hold int32 ``input_ids`` only: an LM block's
    labels are its inputs (collate fills them in)."""
    eos = tokenizer.eos_token_id
    ds = texts if isinstance(texts, datasets.Dataset) else datasets.Dataset.from_dict({"text": list(texts)})

    def tokenize(batch):
        ids = tokenizer(batch["text"], add_special_tokens=False)["input_ids"]
        flat = [t for x in ids for t in x + [eos]]
        n = len(flat) // block_size * block_size
        return {"input_ids": [flat[i : i + block_size] for i in range(0, n, block_size)]}

    # blocks are cut within each map batch of 1000 texts (a remainder shorter than a block
    # at the end of a batch is dropped, as in run_clm's group_texts)
    features = datasets.Features({"input_ids": datasets.Sequence(datasets.Value("int32"))})
    kwargs = {"keep_in_memory": True} if cache_dir is None else {
        "cache_file_name": str(Path(cache_dir) / f"blocks-{uuid.uuid4().hex}.arrow")}
    return ds.map(tokenize, batched=True, batch_size=1000, remove_columns=ds.column_names, features=features,
                  new_fingerprint=uuid.uuid4().hex, **kwargs)


class ExampleStream:
    """Endless seeded pass over examples: reshuffled every epoch, position kept for resume."""

    def __init__(self, examples, seed: int, name: str = "data"):
        if len(examples) == 0:
            raise UserError(f"{name}: no training examples (is the text shorter than one block?)")
        self.examples = examples
        self.seed = seed
        self.name = name
        self.epoch = 0
        self.position = 0
        self._order = self._permutation()

    def _permutation(self) -> list[int]:
        order = list(range(len(self.examples)))
        random.Random(self.seed * 1_000_003 + self.epoch).shuffle(order)
        return order

    def __iter__(self) -> Iterator[dict]:
        return self

    def __next__(self) -> dict:
        if self.position >= len(self._order):
            self.epoch += 1
            self.position = 0
            self._order = self._permutation()
        example = self.examples[self._order[self.position]]
        self.position += 1
        return example

    def __len__(self) -> int:
        return len(self.examples)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.position = state["epoch"], state["position"]
        self._order = self._permutation()


def pad_right(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token lists right-padded into (input_ids, attention_mask)."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(list(s), dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids, mask


def labels_of(example: dict):
    """An example's labels: instruction examples carry their own (-100 on the prompt);
    language-modelling blocks carry none, their labels are their inputs."""
    return example.get("labels", example["input_ids"])


def collate(examples: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest example; padded label positions are -100 (no loss).
    ``num_tokens`` counts the non-padding tokens (the loop pops it before the forward)."""
    ids, mask = pad_right([e["input_ids"] for e in examples], pad_id)
    labels, _ = pad_right([labels_of(e) for e in examples], -100)
    return {"input_ids": ids, "labels": labels, "attention_mask": mask, "num_tokens": mask.sum()}


def pack_rows(lengths: list[int], width: int) -> list[list[int]]:
    """First-fit decreasing: example indices grouped into rows of at most ``width`` tokens."""
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        for r, free in enumerate(room):
            if lengths[i] <= free:
                rows[r].append(i)
                room[r] -= lengths[i]
                break
        else:
            rows.append([i])
            room.append(max(width, lengths[i]) - lengths[i])
    return rows


def collate_packed(examples: list[dict], pad_id: int, width: int) -> dict[str, torch.Tensor]:
    """Several examples per row, each attending only to itself.

    Position ids restart at every example and a 4D block-diagonal causal mask keeps
    attention inside each example, so every example's logits -- and so its loss -- equal
    those it gets alone (tests/test_packing.py). Each example starts with a token whose
    label is -100 (BOS of an instruction) or is a full LM block, so no loss crosses a
    boundary. The mask is additive (0 = attend, dtype min = blocked)."""
    rows = pack_rows([len(e["input_ids"]) for e in examples], width)
    longest = max(sum(len(examples[i]["input_ids"]) for i in row) for row in rows)
    ids = torch.full((len(rows), longest), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), longest), -100, dtype=torch.long)
    positions = torch.zeros((len(rows), longest), dtype=torch.long)
    allowed = torch.zeros((len(rows), longest, longest), dtype=torch.bool)
    causal = torch.ones((longest, longest), dtype=torch.bool).tril()
    tokens = 0
    for r, row in enumerate(rows):
        start = 0
        for i in row:
            e = examples[i]
            n = len(e["input_ids"])
            ids[r, start : start + n] = torch.tensor(e["input_ids"])
            labels[r, start : start + n] = torch.tensor(labels_of(e))
            positions[r, start : start + n] = torch.arange(n)
            allowed[r, start : start + n, start : start + n] = causal[:n, :n]
            start += n
        tokens += start
        allowed[r, torch.arange(start, longest), torch.arange(start, longest)] = True  # padding sees itself
    mask = torch.zeros(allowed.shape, dtype=torch.float32).masked_fill_(~allowed, torch.finfo(torch.float32).min)
    return {"input_ids": ids, "labels": labels, "position_ids": positions, "attention_mask": mask[:, None],
            "num_tokens": torch.tensor(tokens)}


def make_batch(examples: list[dict], pad_id: int, pack_width: int | None) -> dict[str, torch.Tensor]:
    """Pack variable-length examples when ``pack_width`` is set; equal-length blocks need no packing."""
    lengths = {len(e["input_ids"]) for e in examples}
    if pack_width and len(lengths) > 1:
        return collate_packed(examples, pad_id, pack_width)
    return collate(examples, pad_id)
