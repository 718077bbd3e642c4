"""Training examples: text cut into language-model blocks, and seeded example streams.

Text comes from adaptlang.sources, batches are made by adaptlang.batching.
"""
from __future__ import annotations

import bisect
import hashlib
import itertools
import random
import uuid
from array import array
from pathlib import Path
from typing import Iterator

import datasets

from .errors import UserError
from .mapped_pages import release_mapped_pages
from .seeds import derive_seed

CUT_ROWS = 1000  # texts whose tokens are joined and cut into blocks together
RELEASE_EVERY = 64  # draws between two release_mapped_pages of a stream's Arrow files (a draw maps ~256 KB)


def tokenizer_fingerprint(tokenizer) -> str:
    """A hash of everything that decides a tokenizer's ids (a fast tokenizer's full JSON)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else datasets.fingerprint.Hasher.hash(tokenizer)
    return hashlib.sha256(f"{text}\x1f{tokenizer.eos_token_id}".encode()).hexdigest()[:16]


def _plain_fast(tokenizer) -> bool:
    """A transformers fast tokenizer whose call goes straight to its Rust backend (no class of
    its own that rewrites the text or the call)."""
    try:
        from transformers.tokenization_utils_base import PreTrainedTokenizerBase
        from transformers.tokenization_utils_tokenizers import TokenizersBackend
    except ImportError:
        return False
    kind = type(tokenizer)
    return (isinstance(tokenizer, TokenizersBackend) and kind.__call__ is PreTrainedTokenizerBase.__call__
            and kind._encode_plus is TokenizersBackend._encode_plus and not hasattr(tokenizer, "_switch_to_input_mode")
            and hasattr(tokenizer._tokenizer, "encode_batch_fast"))


def token_ids(tokenizer, texts: list[str]) -> list[list[int]]:
    """``tokenizer(texts, add_special_tokens=False)["input_ids"]``; for a plain fast tokenizer
    through its backend's ``encode_batch_fast`` (the same ids without offsets or Python-side
    conversion: 1.6-2x the tokens/s on the tiny default's tokenizer, docs/data.md)."""
    if not _plain_fast(tokenizer):
        return tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    backend = tokenizer._tokenizer
    if backend.encode_special_tokens != tokenizer.split_special_tokens:  # as the call sets it
        backend.encode_special_tokens = tokenizer.split_special_tokens
    return [e.ids for e in backend.encode_batch_fast(list(texts), add_special_tokens=False)]


def lm_examples(texts, tokenizer, block_size: int, cache_dir: str | None = None, source_key: str | None = None,
                num_proc: int = 1, rows_by_language: list[int] | None = None) -> datasets.Dataset:
    """Causal-LM blocks: texts tokenized, joined with EOS, cut into ``block_size`` tokens.

    ``texts`` is a list or a Dataset with a ``text`` column. With ``cache_dir`` the blocks
    are written there as Arrow and memory-mapped (memory stays flat as the corpus grows);
    without, they are kept in memory. With ``source_key`` (the text's fingerprint,
    adaptlang.sources.source_fingerprint) too, the cache file is named by that key, the
    tokenizer's fingerprint and ``block_size``, and a later run finds and reuses it.
    ``num_proc`` processes tokenize contiguous parts of the text in parallel (the blocks then
    differ from those of one process: each part ends with its own remainder). Blocks hold
    int32 ``input_ids`` (an LM block's labels are its inputs: collate fills them in).

    ``rows_by_language``: the text is several languages' rows one after another, that many
    rows each (in order); every block then also has ``language_tokens``, the number of its
    tokens from each language as pairs ``[language index, tokens, ...]`` (usually one pair: a
    block mixes languages only where one language's rows end), which ExampleStream sums over
    the blocks it draws. The blocks' ``input_ids`` are the same with or without it."""
    eos = tokenizer.eos_token_id
    ds = texts if isinstance(texts, datasets.Dataset) else datasets.Dataset.from_dict({"text": list(texts)})
    ends = list(itertools.accumulate(rows_by_language)) if rows_by_language is not None else None

    read = ds if num_proc <= 1 else None  # the Dataset this process reads (workers read copies of their own)

    def tokenize(batch, indices):  # one group of CUT_ROWS texts
        release_mapped_pages(read)  # the text read so far leaves this process's memory
        ids = token_ids(tokenizer, batch["text"])
        flat = list(itertools.chain.from_iterable(x + [eos] for x in ids))
        n = len(flat) // block_size * block_size
        blocks = {"input_ids": [flat[i : i + block_size] for i in range(0, n, block_size)]}
        if ends is not None:
            blocks["language_tokens"] = language_tokens(language_runs(ids, indices, ends), n, block_size)
        return blocks

    # blocks are cut within each group of 1000 texts (a remainder shorter than a block at the
    # end of a group is dropped, as in run_clm's group_texts). One group a map batch: the
    # tokenizer's and the batch's memory (Python lists of ids) then peaks at the same size
    # whatever the corpus (10 groups a batch was as fast but took 60-80 MB more from a corpus
    # of 10,000 rows a language on, docs/data.md)
    columns = {"input_ids": datasets.Sequence(datasets.Value("int32"))}
    if ends is not None:
        columns["language_tokens"] = datasets.Sequence(datasets.Value("int32"))
    features = datasets.Features(columns)
    name = uuid.uuid4().hex
    if cache_dir is not None and source_key is not None:
        name = hashlib.sha256(f"{source_key}\x1f{tokenizer_fingerprint(tokenizer)}\x1f{block_size}\x1f{num_proc}"
                              f"\x1f{rows_by_language}".encode()).hexdigest()[:32]
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
    kwargs = {"keep_in_memory": True} if cache_dir is None else {
        "cache_file_name": str(Path(cache_dir) / f"blocks-{name}.arrow"), "load_from_cache_file": True}
    blocks = ds.map(tokenize, batched=True, with_indices=True, batch_size=CUT_ROWS, remove_columns=ds.column_names,
                    features=features, new_fingerprint=name, num_proc=num_proc if num_proc > 1 else None, **kwargs)
    release_mapped_pages(ds)
    release_mapped_pages(blocks)  # opening an Arrow file reads a page of every record batch
    return blocks


def language_runs(group: list[list[int]], rows: list[int], ends: list[int]) -> list[tuple[int, int]]:
    """(language index, tokens) of each run of same-language texts in ``group`` (the token ids
    of texts ``rows`` of the joined text; language i's rows end before ``ends[i]``), EOS included."""
    first, last = bisect.bisect_right(ends, rows[0]), bisect.bisect_right(ends, rows[-1])
    if first == last:  # the usual case: the whole group is one language
        return [(first, sum(len(x) + 1 for x in group))]
    runs: list[tuple[int, int]] = []
    for x, row in zip(group, rows):
        language = bisect.bisect_right(ends, row)
        if runs and runs[-1][0] == language:
            runs[-1] = (language, runs[-1][1] + len(x) + 1)
        else:
            runs.append((language, len(x) + 1))
    return runs


def language_tokens(runs: list[tuple[int, int]], n: int, block_size: int) -> list[list[int]]:
    """Per block of the first ``n`` tokens: ``[language index, tokens, ...]`` of the ``runs``
    it overlaps."""
    if len(runs) == 1:
        return [[runs[0][0], block_size] for _ in range(n // block_size)]
    out, start, spans = [], 0, []
    for language, length in runs:
        spans.append((language, start, start + length))
        start += length
    for begin in range(0, n, block_size):
        end, pairs = begin + block_size, []
        for language, s, e in spans:
            overlap = min(end, e) - max(begin, s)
            if overlap > 0:
                pairs += [language, overlap]
        out.append(pairs)
    return out


class ExampleStream:
    """Endless seeded pass over examples: reshuffled every epoch, position kept for resume.

    With ``languages`` (the codes of lm_examples' ``rows_by_language``, in order) the examples
    are text blocks with a ``language_tokens`` column: the stream takes it off each example it
    gives and sums the tokens drawn per language (``realized``; kept in its state)."""

    def __init__(self, examples, seed: int, name: str = "data", languages: list[str] | None = None):
        if len(examples) == 0:
            raise UserError(f"{name}: no training examples (is the text shorter than one block?)")
        self.examples = examples
        self.seed = seed
        self.name = name
        self.languages = list(languages) if languages is not None else None
        self.release_every = RELEASE_EVERY  # 0: someone else releases its mapped pages (MixedStream)
        self.language_tokens = [0] * len(self.languages or ())
        self.epoch = 0
        self.position = 0
        self._order = self._permutation()

    def _permutation(self) -> array:
        # 8 bytes per example (a list of ints takes 36): the same shuffle, as the draws depend only on the length
        order = array("q", range(len(self.examples)))
        random.Random(derive_seed(self.seed, "", f"epoch/{self.epoch}")).shuffle(order)
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
        if self.release_every and self.position % self.release_every == 0:
            release_mapped_pages(self.examples)  # the pages random reads mapped would stay in RSS
        if self.languages is not None:
            pairs = example.pop("language_tokens")
            for i in range(0, len(pairs), 2):
                self.language_tokens[pairs[i]] += pairs[i + 1]
        return example

    def __len__(self) -> int:
        return len(self.examples)

    def realized(self) -> dict:
        """tokens_by_language and realized_shares of the blocks drawn so far (none without
        ``languages`` or before the first draw)."""
        total = sum(self.language_tokens)
        if self.languages is None or not total:
            return {}
        return {"tokens_by_language": dict(zip(self.languages, self.language_tokens)),
                "realized_shares": {c: round(t / total, 4) for c, t in zip(self.languages, self.language_tokens)}}

    def state_dict(self) -> dict:
        state = {"epoch": self.epoch, "position": self.position}
        if self.languages is not None:
            state["language_tokens"] = list(self.language_tokens)
        return state

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.position = state["epoch"], state["position"]
        if self.languages is not None:
            self.language_tokens = list(state.get("language_tokens") or [0] * len(self.languages))
        self._order = self._permutation()
