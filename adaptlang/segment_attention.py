"""Attention over packed rows that computes only each example's own scores.

A packed row (adaptlang.batching.collate_packed) holds several examples; a 4-D
block-diagonal mask keeps each one to itself, but SDPA given a dense mask computes every
score of the row: for a 1,024-token row of 160-token examples, about six times the scores
the examples need, and none of the causal kernel's skipping of the upper triangle. This
attention (registered in transformers as ``adaptlang_segments``; everything else, masks
included, is transformers' SDPA) takes the examples' lengths (``segments``, one row of lengths
per packed row, the row's padding last) and runs causal SDPA on each example alone: the scores
computed are those of the examples, and the logits are those of the masked path
(tests/test_packing.py).

Where the row's own attention would differ from plain causal attention within an example
(a sliding window shorter than an example, logit soft-capping) or no ``segments`` are given
(evaluation, generation, padded batches), it falls back to SDPA with the mask it was given.
"""
from __future__ import annotations

import torch

NAME = "adaptlang_segments"


def segment_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                      segments: torch.Tensor | None = None, **kwargs):
    """transformers' attention signature: ``query`` (rows, heads, length, dim), ``key``/``value``
    (rows, kv heads, length, dim); returns ((rows, length, heads, dim), None)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if segments is None or kwargs.get("softcap") or not _window_covers(kwargs.get("sliding_window"), segments):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    kwargs.pop("sliding_window", None)
    rows = []
    for r, lengths in enumerate(segments.tolist()):
        parts, start = [], 0
        for n in lengths:
            if n == 0:
                break
            out, _ = sdpa_attention_forward(module, query[r:r + 1, :, start:start + n], key[r:r + 1, :, start:start + n],
                                            value[r:r + 1, :, start:start + n], None, dropout=dropout,
                                            scaling=scaling, is_causal=True, **kwargs)
            parts.append(out)
            start += n
        rows.append(torch.cat(parts, dim=1))
    return torch.cat(rows, dim=0), None


def _window_covers(window, segments: torch.Tensor) -> bool:
    return window is None or int(segments.max()) <= int(window)


def register() -> None:
    """Make ``adaptlang_segments`` an attention implementation transformers knows, with SDPA's masks."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(NAME, segment_attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)
