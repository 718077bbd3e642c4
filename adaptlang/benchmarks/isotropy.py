"""Isotropy of contextual token representations (Ethayarajh 2019), per language and class.

The AF paper (section 5, Table 2) reports "self similarity of contextual embeddings
(Ethayarajh, 2019)", lower = better contextualised. What is computed here, exactly:

* text: the held-out split (as perplexity: FLORES-200 devtest 500-1011, UDHR for se/co),
  the first ``eval.isotropy.sentences`` sentences of each language, each run on its own
  after BOS (batched with right padding; BOS and padding positions are not used);
* representations: ``hidden_states[l]`` for every layer l in ``eval.isotropy.layers``
  (transformers' indexing: 0 = token embeddings, -1 = the last layer's output after the
  final norm); every figure is computed per layer and then averaged over the listed layers;
* **self-similarity** (Ethayarajh's SelfSim): for each token type (sentencepiece piece,
  not word: the model's own units) that occurs in at least ``min_contexts`` different
  sentences, take its first occurrence in each sentence (at most ``max_occurrences``
  sentences, chosen at random), and average the cosine similarity over all pairs of
  these occurrences; the language's figure is the mean over token types;
* **anisotropy baseline**: the mean cosine similarity of ``pairs`` random pairs of token
  occurrences (uniform over all non-BOS positions) from different sentences;
* ``adjusted_self_similarity`` = self-similarity - baseline (Ethayarajh's adjustment
  for anisotropy).

Random choices use ``numpy.random.default_rng(seed)`` with seed = the run's seed.
Deviation: the AF paper does not say which layer(s) or text it uses; ours are above
(default: the last layer only) and the text is FLORES, not mC4. Ethayarajh uses words in
at least 5 contexts; we use model tokens (subword pieces) with the same threshold.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch

from ..sources import heldout_texts
from ..batching import pad_right
from ..errors import UserError
from . import register_benchmark
from ._common import means_by_group
from ..progress import log_seconds, track

METRICS = ("self_similarity", "anisotropy", "adjusted_self_similarity")


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def self_similarity(groups: list[np.ndarray]) -> float:
    """Mean over groups (one per token type, shape (n_i >= 2, d)) of the mean pairwise cosine
    similarity between different rows of the group."""
    if not groups:
        raise ValueError("no token type with at least two contexts")
    sims = []
    for g in groups:
        u = _unit(np.asarray(g, dtype=np.float64))
        n = len(u)
        if n < 2:
            raise ValueError("every group needs at least two occurrences")
        s = u @ u.T
        sims.append((s.sum() - np.trace(s)) / (n * n - n))
    return float(np.mean(sims))


def anisotropy(vectors: np.ndarray, sentence_ids: np.ndarray, pairs: int, rng: np.random.Generator) -> float:
    """Mean cosine of ``pairs`` uniformly random pairs of rows from different sentences."""
    u = _unit(np.asarray(vectors, dtype=np.float64))
    sentence_ids = np.asarray(sentence_ids)
    if len(set(sentence_ids.tolist())) < 2:
        raise ValueError("need occurrences from at least two sentences")
    a = rng.integers(0, len(u), size=pairs * 3)
    b = rng.integers(0, len(u), size=pairs * 3)
    keep = sentence_ids[a] != sentence_ids[b]
    a, b = a[keep][:pairs], b[keep][:pairs]
    return float(np.mean(np.sum(u[a] * u[b], axis=1)))


@torch.inference_mode()
def hidden_states(model, tokenizer, texts: list[str], layers: list[int], batch_size: int, max_length: int = 512):
    """Per layer: (vectors (N, d), token ids (N,), sentence ids (N,)) over non-BOS tokens."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    encoded = [(bos + ids)[:max_length] for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    vecs: dict[int, list[np.ndarray]] = {layer: [] for layer in layers}
    toks, sents = [], []
    for start in range(0, len(encoded), batch_size):
        chunk = encoded[start : start + batch_size]
        ids, mask = pad_right(chunk, pad)
        out = model(input_ids=ids.to(device), attention_mask=mask.to(device), output_hidden_states=True)
        keep = mask.bool()
        keep[:, : len(bos)] = False
        for layer in layers:
            vecs[layer].append(out.hidden_states[layer][keep.to(device)].float().cpu().numpy())
        toks.append(ids[keep].numpy())
        sents.append((torch.arange(len(chunk))[:, None].expand_as(ids) + start)[keep].numpy())
    if was_training:
        model.train()
    return {layer: np.concatenate(v) for layer, v in vecs.items()}, np.concatenate(toks), np.concatenate(sents)


def type_groups(tokens: np.ndarray, sentences: np.ndarray, min_contexts: int, max_occurrences: int,
                rng: np.random.Generator) -> list[np.ndarray]:
    """Row indices per token type: its first occurrence in each sentence, for types seen in at
    least ``min_contexts`` sentences (at most ``max_occurrences`` sentences, chosen at random)."""
    first: dict[int, dict[int, int]] = defaultdict(dict)
    for row, (tok, sent) in enumerate(zip(tokens.tolist(), sentences.tolist())):
        first[tok].setdefault(sent, row)
    groups = []
    for tok in sorted(first):
        rows = np.array(list(first[tok].values()))
        if len(rows) >= min_contexts:
            if len(rows) > max_occurrences:
                rows = rng.choice(rows, size=max_occurrences, replace=False)
            groups.append(rows)
    return groups


def measure(model, tokenizer, texts: list[str], icfg, seed: int, batch_size: int) -> dict | str:
    layers = [int(x) for x in icfg.get("layers", [-1])]
    vectors, tokens, sentences = hidden_states(model, tokenizer, texts, layers, batch_size)
    rng = np.random.default_rng(seed)
    groups = type_groups(tokens, sentences, int(icfg.get("min_contexts", 5)), int(icfg.get("max_occurrences", 20)), rng)
    if not groups:
        return f"no token type occurs in {icfg.get('min_contexts', 5)} or more of its {len(texts)} sentences"
    per_layer = {}
    for layer in layers:
        ss = self_similarity([vectors[layer][g] for g in groups])
        an = anisotropy(vectors[layer], sentences, int(icfg.get("pairs", 2000)), rng)
        per_layer[str(layer)] = {"self_similarity": ss, "anisotropy": an, "adjusted_self_similarity": ss - an}
    result = {m: float(np.mean([v[m] for v in per_layer.values()])) for m in METRICS}
    result.update({"layers": per_layer, "n_types": len(groups), "n_tokens": int(len(tokens)), "n_sentences": len(texts)})
    return result


@register_benchmark("isotropy")
def isotropy(model, tokenizer, languages, cfg) -> dict:
    icfg = cfg.eval.get("isotropy") or {}
    n_layers = model.config.num_hidden_layers
    for layer in icfg.get("layers", [-1]):
        if not -(n_layers + 1) <= int(layer) <= n_layers:
            raise UserError(f"eval.isotropy.layers: {layer} is out of range for a model with {n_layers} layers "
                            f"(valid: {-(n_layers + 1)}..{n_layers}; 0 = embeddings, -1 = last)")
    per_language, skipped = {}, {}
    for code in track(languages.all_codes(), "eval isotropy", seconds=log_seconds(cfg)):
        texts, source = heldout_texts(code, languages, cfg, icfg.get("sentences", 64))
        if texts is None:
            skipped[code] = source
            continue
        result = measure(model, tokenizer, texts, icfg, int(cfg.get("seed", 0)), int(cfg.eval.batch_size))
        if isinstance(result, str):
            skipped[code] = result
            continue
        result["class"] = languages.class_of(code)
        result["source"] = source
        per_language[code] = result
    return {"languages": per_language, "classes": means_by_group(per_language, languages.classes, METRICS),
            "skipped": skipped}
