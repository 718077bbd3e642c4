"""Batches: right padding, and packing of several examples per row without cross-attention."""
from __future__ import annotations

from typing import Sequence

import torch


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


def collate_packed(examples: list[dict], pad_id: int, width: int,
                   rows: list[list[int]] | None = None, segments: bool = False) -> dict[str, torch.Tensor]:
    """Several examples per row, each attending only to itself.

    Position ids restart at every example and a 4D block-diagonal causal mask keeps
    attention inside each example, so every example's logits -- and so its loss -- equal
    those it gets alone (tests/test_packing.py). Each example starts with a token whose
    label is -100 (BOS of an instruction) or is a full LM block, so no loss crosses a
    boundary. The mask is additive (0 = attend, dtype min = blocked).

    ``segments``: also give each row's example lengths, its padding last, zero-filled
    (``segments``, rows x most examples in a row), for adaptlang.segment_attention."""
    if rows is None:  # ``rows``: pack_rows' grouping, when the caller has it already
        rows = pack_rows([len(e["input_ids"]) for e in examples], width)
    longest = max(sum(len(examples[i]["input_ids"]) for i in row) for row in rows)
    ids = torch.full((len(rows), longest), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), longest), -100, dtype=torch.long)
    positions = torch.zeros((len(rows), longest), dtype=torch.long)
    allowed = torch.zeros((len(rows), longest, longest), dtype=torch.bool)
    causal = torch.ones((longest, longest), dtype=torch.bool).tril()
    tokens = 0
    lengths = torch.zeros((len(rows), max(map(len, rows)) + 1), dtype=torch.long)  # the examples', then padding
    for r, row in enumerate(rows):
        start = 0
        for k, i in enumerate(row):
            e = examples[i]
            n = lengths[r, k] = len(e["input_ids"])
            ids[r, start : start + n] = torch.tensor(e["input_ids"])
            labels[r, start : start + n] = torch.tensor(labels_of(e))
            positions[r, start : start + n] = torch.arange(n)
            allowed[r, start : start + n, start : start + n] = causal[:n, :n]
            start += n
        tokens += start
        lengths[r, len(row)] = longest - start
        allowed[r, torch.arange(start, longest), torch.arange(start, longest)] = True  # padding sees itself
    mask = torch.zeros(allowed.shape, dtype=torch.float32).masked_fill_(~allowed, torch.finfo(torch.float32).min)
    batch = {"input_ids": ids, "labels": labels, "position_ids": positions, "attention_mask": mask[:, None],
             "num_tokens": torch.tensor(tokens)}
    if segments:
        batch["segments"] = lengths
    return batch


def make_batch(examples: list[dict], pad_id: int, pack_width: int | None,
               segments: bool = False) -> dict[str, torch.Tensor]:
    """Pack variable-length examples when ``pack_width`` is set; equal-length blocks need no packing.

    Where packing leaves every example in a row of its own (examples nearly as long as the
    row), the batch is the right-padded one without an attention mask: the model's own causal
    attention then gives each example exactly what the block-diagonal mask would (right
    padding comes after every real token, and padded positions carry no label), and SDPA's
    causal kernel skips the masked half of the scores, which a dense mask makes it compute
    (the default instruct stage's attention: ~2x faster). ``segments``: see collate_packed."""
    lengths = [len(e["input_ids"]) for e in examples]
    if pack_width and len(set(lengths)) > 1:
        rows = pack_rows(lengths, pack_width)
        if len(rows) < len(examples):
            return collate_packed(examples, pad_id, pack_width, rows, segments)
        batch = collate(examples, pad_id)
        del batch["attention_mask"]
        return batch
    return collate(examples, pad_id)
