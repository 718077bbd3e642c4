"""Held-out perplexity per language and per language class.

Perplexity per token is not comparable across tokenizers (a vocabulary-expanded model cuts
text into fewer, rarer tokens), so every language also gets per-character figures
(DESIGN.md section 5):

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
from ..progress import log_seconds, track

METRICS = ("ppl_token", "bits_per_char", "ppl_char", "bits_per_byte")


@torch.inference_mode()
def score_texts(model, tokenizer, texts: list[str], batch_size: int = 32, max_length: int = 512) -> dict:
    """Summed NLL (nats) and counts over the texts."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    encoded = [bos + ids for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    encoded = [ids[:max_length] for ids in encoded]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    nll, tokens = 0.0, 0
    for start in range(0, len(order), batch_size):
        chunk = [encoded[i] for i in order[start : start + batch_size]]
        ids, mask = pad_right(chunk, pad)
        ids, mask = ids.to(device), mask.to(device)
        nll += token_nll(model, ids, mask)
        tokens += int(mask[:, 1:].sum())
    if was_training:
        model.train()
    chars = sum(len(t) for t in texts)
    nbytes = sum(len(t.encode("utf-8")) for t in texts)
    return {"nll": nll, "n_tokens": tokens, "n_chars": chars, "n_bytes": nbytes, "n_sentences": len(texts)}


@torch.inference_mode()
def token_nll(model, ids, mask) -> float:
    """Summed NLL of tokens 1..n given their prefixes. The LM head runs only on the positions
    that are scored (padding is never projected onto the vocabulary): with an 8000-piece
    vocabulary and byte-fallback scripts the full logits tensor dominated the cost."""
    head, body = head_and_body(model)
    if head is None:
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
        keep = mask[:, 1:].bool()
        return float(torch.nn.functional.cross_entropy(logits[keep], ids[:, 1:][keep], reduction="sum"))
    hidden = body(input_ids=ids, attention_mask=mask).last_hidden_state[:, :-1]
    keep = mask[:, 1:].bool()
    logits = head(hidden[keep]).float()
    return float(torch.nn.functional.cross_entropy(logits, ids[:, 1:][keep], reduction="sum"))


def figures(s: dict) -> dict:
    return {
        "ppl_token": math.exp(s["nll"] / max(s["n_tokens"], 1)),
        "bits_per_char": s["nll"] / (math.log(2) * max(s["n_chars"], 1)),
        "ppl_char": math.exp(s["nll"] / max(s["n_chars"], 1)),
        "bits_per_byte": s["nll"] / (math.log(2) * max(s["n_bytes"], 1)),
        "n_tokens": s["n_tokens"], "n_chars": s["n_chars"], "n_sentences": s["n_sentences"],
        "tokens_per_char": s["n_tokens"] / max(s["n_chars"], 1),
    }


def class_means(per_language: dict, languages) -> dict:
    out = {}
    groups = {cls: [c for c in codes if c in per_language] for cls, codes in languages.classes.items()}
    groups["overall"] = list(per_language)
    for cls, codes in groups.items():
        if codes:
            out[cls] = {m: sum(per_language[c][m] for c in codes) / len(codes) for m in METRICS}
            out[cls]["n_languages"] = len(codes)
    return out


@register_benchmark("perplexity")
def perplexity(model, tokenizer, languages, cfg) -> dict:
    per_language, skipped = {}, {}
    limit = cfg.eval.get("max_sentences")
    for code in track(languages.all_codes(), "eval perplexity", seconds=log_seconds(cfg)):
        texts, source = heldout_texts(code, languages, cfg, limit)
        if texts is None:
            skipped[code] = source
            continue
        result = figures(score_texts(model, tokenizer, texts, int(cfg.eval.batch_size)))
        result["class"] = languages.class_of(code)
        result["source"] = source
        per_language[code] = result
    return {"languages": per_language, "classes": class_means(per_language, languages), "skipped": skipped}
