"""Training examples: text cut into language-model blocks, and seeded example streams.

Text comes from adaptlang.sources, batches are made by adaptlang.batching.
"""
from __future__ import annotations

import random
import uuid
from pathlib import Path
from typing import Iterator

import datasets

from .errors import UserError
from .seeds import derive_seed


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
