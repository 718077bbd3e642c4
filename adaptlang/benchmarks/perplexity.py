"""Held-out perplexity per language and per language class.

Perplexity per token is not comparable across tokenizers (a vocabulary-expanded model cuts
text into fewer, rarer tokens), so every language also gets per-character and per-byte figures:

* ``ppl_token``     = exp(NLL / tokens)
* ``bits_per_char`` = NLL / (ln 2 * characters);  ``ppl_char`` = exp(NLL / characters)
* ``bits_per_byte`` = NLL / (ln 2 * UTF-8 bytes)

NLL is summed over every token of each sentence, each scored on its own after a BOS token.
Text: the held-out split of adaptlang.data (FLORES-200 devtest 500-1011, UDHR where
FLORES lacks the language), the first ``eval.max_sentences`` sentences. A class figure is
the unweighted mean over its languages; ``overall`` is the mean over all measured languages.
"""
from __future__ import annotations

import math

import torch

from ..sources import heldout_texts
from ..batching import pad_right
from ..models import head_and_body
from . import register_benchmark
from ._common import means_by_group
from ..progress import log_seconds, track

METRICS = ("ppl_token", "bits_per_char", "ppl_char", "bits_per_byte")


@torch.inference_mode()
def score_groups(model, tokenizer, groups: dict[str, list[str]], batch_size: int = 32, max_length: int = 512,
                 progress: str | None = None, seconds: float | None = None) -> dict[str, dict]:
    """Summed NLL (nats) and counts (tokens, characters, bytes, sentences) of every group
    (language) at once: the sentences of all groups are sorted by length together and
    batched, and each sentence's NLL goes back to its group.

    Batching one language at a time padded every batch to its longest sentence: with 32
    sentences a language, half of the tokens the body ran on were padding (and 3.6x the
    attention area) in the default evaluation. A sentence's score does not depend on its
    batch (right padding, causal attention), up to float rounding."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    sentences = []  # (group, token ids)
    for name, texts in groups.items():
        if texts:
            sentences += [(name, (bos + ids)[:max_length])
                          for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    sentences.sort(key=lambda s: len(s[1]))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    nll, tokens = dict.fromkeys(groups, 0.0), dict.fromkeys(groups, 0)
    starts = range(0, len(sentences), batch_size)
    for start in (track(starts, progress, unit="batch", seconds=seconds) if progress else starts):
        chunk = sentences[start : start + batch_size]
        ids, mask = pad_right([ids for _, ids in chunk], pad)
        ids, mask = ids.to(device), mask.to(device)
        for (name, row), value in zip(chunk, sentence_nll(model, ids, mask).tolist()):
            nll[name] += value
            tokens[name] += max(len(row) - 1, 0)
    if was_training:
        model.train()
    return {name: {"nll": nll[name], "n_tokens": tokens[name], "n_chars": sum(len(t) for t in texts),
                   "n_bytes": sum(len(t.encode("utf-8")) for t in texts), "n_sentences": len(texts)}
            for name, texts in groups.items()}


@torch.inference_mode()
def sentence_nll(model, ids, mask, chunk: int = 1024) -> torch.Tensor:
    """Summed NLL of tokens 1..n given their prefixes, one value per row. The LM head runs only
    on the positions that are scored (padding is never projected onto the vocabulary): with an
    8000-piece vocabulary and byte-fallback scripts the full logits tensor dominated the cost.
    It projects ``chunk`` positions at a time: a batch of 32 byte-level rows holds thousands of
    positions, and their logits over a 49,152-piece vocabulary (SmolLM2) took 1-2 GB at once."""
    head, body = head_and_body(model)
    keep = mask[:, 1:].bool()
    targets = ids[:, 1:][keep]
    if head is None:
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1][keep].float()
        losses = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
    else:
        hidden = body(input_ids=ids, attention_mask=mask).last_hidden_state[:, :-1][keep]
        losses = torch.cat([torch.nn.functional.cross_entropy(head(h).float(), t, reduction="none")
                            for h, t in zip(hidden.split(chunk), targets.split(chunk))])
    rows = torch.arange(ids.shape[0], device=ids.device)[:, None].expand_as(keep)[keep]
    return torch.zeros(ids.shape[0], dtype=losses.dtype, device=losses.device).index_add_(0, rows, losses)


def figures(s: dict) -> dict:
    return {
        "ppl_token": math.exp(s["nll"] / max(s["n_tokens"], 1)),
        "bits_per_char": s["nll"] / (math.log(2) * max(s["n_chars"], 1)),
        "ppl_char": math.exp(s["nll"] / max(s["n_chars"], 1)),
        "bits_per_byte": s["nll"] / (math.log(2) * max(s["n_bytes"], 1)),
        "n_tokens": s["n_tokens"], "n_chars": s["n_chars"], "n_sentences": s["n_sentences"],
        "tokens_per_char": s["n_tokens"] / max(s["n_chars"], 1),
    }


@register_benchmark("perplexity")
def perplexity(model, tokenizer, languages, cfg) -> dict:
    per_language, skipped, texts, sources = {}, {}, {}, {}
    limit = cfg.eval.get("max_sentences")
    for code in languages.all_codes():
        texts[code], sources[code] = heldout_texts(code, languages, cfg, limit)
        if texts[code] is None:
            skipped[code] = sources[code]
            del texts[code]
    scores = score_groups(model, tokenizer, texts, int(cfg.eval.batch_size), progress="eval perplexity",
                          seconds=log_seconds(cfg))
    for code, score in scores.items():
        result = figures(score)
        result["class"] = languages.class_of(code)
        result["source"] = sources[code]
        per_language[code] = result
    classes = means_by_group(per_language, languages.classes, METRICS)
    return {"languages": per_language, "classes": classes, "skipped": skipped}
