"""Training examples: text cut into language-model blocks, and seeded example streams.

Text comes from adaptlang.sources, batches are made by adaptlang.batching.
"""
from __future__ import annotations

import hashlib
import itertools
import random
import uuid
from array import array
from pathlib import Path
from typing import Iterator

import datasets

from .errors import UserError
from .seeds import derive_seed

CUT_ROWS = 1000  # texts whose tokens are joined and cut into blocks together


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
                num_proc: int = 1) -> datasets.Dataset:
    """Causal-LM blocks: texts tokenized, joined with EOS, cut into ``block_size`` tokens.

    ``texts`` is a list or a Dataset with a ``text`` column. With ``cache_dir`` the blocks
    are written there as Arrow and memory-mapped (memory stays flat as the corpus grows);
    without, they are kept in memory. With ``source_key`` (the text's fingerprint,
    adaptlang.sources.source_fingerprint) too, the cache file is named by that key, the
    tokenizer's fingerprint and ``block_size``, and a later run finds and reuses it.
    ``num_proc`` processes tokenize contiguous parts of the text in parallel (the blocks then
    differ from those of one process: each part ends with its own remainder). Blocks hold
    int32 ``input_ids`` only: an LM block's labels are its inputs (collate fills them in)."""
    eos = tokenizer.eos_token_id
    ds = texts if isinstance(texts, datasets.Dataset) else datasets.Dataset.from_dict({"text": list(texts)})

    def tokenize(batch):
        ids = token_ids(tokenizer, batch["text"])
        blocks = []
        for start in range(0, len(ids), CUT_ROWS):
            flat = list(itertools.chain.from_iterable(x + [eos] for x in ids[start:start + CUT_ROWS]))
            n = len(flat) // block_size * block_size
            blocks += [flat[i : i + block_size] for i in range(0, n, block_size)]
        return {"input_ids": blocks}

    # blocks are cut within each group of 1000 texts (a remainder shorter than a block at the
    # end of a group is dropped, as in run_clm's group_texts); the tokenizer is called on 10
    # groups at a time (fewer calls, the same blocks)
    features = datasets.Features({"input_ids": datasets.Sequence(datasets.Value("int32"))})
    name = uuid.uuid4().hex
    if cache_dir is not None and source_key is not None:
        name = hashlib.sha256(f"{source_key}\x1f{tokenizer_fingerprint(tokenizer)}\x1f{block_size}\x1f{num_proc}"
                              .encode()).hexdigest()[:32]
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
    kwargs = {"keep_in_memory": True} if cache_dir is None else {
        "cache_file_name": str(Path(cache_dir) / f"blocks-{name}.arrow"), "load_from_cache_file": True}
    return ds.map(tokenize, batched=True, batch_size=10 * CUT_ROWS, remove_columns=ds.column_names, features=features,
                  new_fingerprint=name, num_proc=num_proc if num_proc > 1 else None, **kwargs)


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
        return example

    def __len__(self) -> int:
        return len(self.examples)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.position = state["epoch"], state["position"]
        self._order = self._permutation()
