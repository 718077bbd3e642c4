"""Log-likelihood of continuations (label words) after prompts, batched.

``score_shared_prompt`` runs each prompt once and reuses its key/value cache for all of its
continuations (the labels): the prompt forward (left-padded, logits only at the last
position) gives the first continuation token's log-probability; only when some label has
more than one token is the cache repeated once per label and the remaining label tokens
run on top of it. ``score_separately`` scores every (prompt, continuation) pair as its own
full sequence; it is the reference the shared version must agree with (tests) and the
baseline of ``bench/eval_suite.py``'s speed-up figure.

A continuation's score is the summed log-probability of its tokens (lm-evaluation-harness's
``acc``, no length normalisation).
"""
from __future__ import annotations

import functools
import inspect
from typing import Sequence

import torch

from ..batching import pad_right
from ..models import head_and_body


def _device(model):
    return next(model.parameters()).device


def _by_length(fn, model, prompts, continuations, pad_id, batch_size):
    """Run ``fn`` on the pairs sorted by prompt length (less padding), return in input order."""
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    scores = fn(model, [prompts[i] for i in order], [continuations[i] for i in order], pad_id, batch_size)
    out: list = [None] * len(prompts)
    for k, i in enumerate(order):
        out[i] = scores[k]
    return out


def cache_keyword(model) -> str:
    """The forward argument that takes a KV cache: ``cache`` since transformers 5.2 (which
    warns on ``past_key_values``), ``past_key_values`` before."""
    return _cache_keyword(type(model))


@functools.lru_cache(maxsize=None)
def _cache_keyword(model_class) -> str:  # read once per class, not per batch
    return "cache" if "cache" in inspect.signature(model_class.forward).parameters else "past_key_values"


def score_shared_prompt(model, prompts: Sequence[list[int]], continuations: Sequence[Sequence[list[int]]],
                        pad_id: int, batch_size: int = 32) -> list[list[float]]:
    """``prompts[i]``: token ids (with BOS); ``continuations[i][j]``: ids of label j (non-empty).
    Every prompt must have the same number of continuations. Returns summed log-probs [i][j]."""
    return _by_length(_shared, model, prompts, continuations, pad_id, batch_size)


def score_separately(model, prompts: Sequence[list[int]], continuations: Sequence[Sequence[list[int]]],
                     pad_id: int, batch_size: int = 32) -> list[list[float]]:
    """The same scores, each (prompt, continuation) pair run as one full sequence (right-padded
    batches of ``batch_size`` sequences; the LM head only on the continuation positions)."""
    return _by_length(_separately, model, prompts, continuations, pad_id, batch_size)


@torch.inference_mode()
def _shared(model, prompts: Sequence[list[int]], continuations: Sequence[Sequence[list[int]]],
            pad_id: int, batch_size: int = 32) -> list[list[float]]:
    if not prompts:
        return []
    n_labels = len(continuations[0])
    if any(len(c) != n_labels for c in continuations) or any(len(x) == 0 for c in continuations for x in c):
        raise ValueError("every prompt needs the same number of non-empty continuations")
    device = _device(model)
    was_training = model.training
    model.eval()
    out: list[list[float]] = []
    for start in range(0, len(prompts), batch_size):
        P = prompts[start : start + batch_size]
        C = continuations[start : start + batch_size]
        B, width = len(P), max(len(p) for p in P)
        ids = torch.full((B, width), pad_id, dtype=torch.long)
        mask = torch.zeros((B, width), dtype=torch.long)
        for row, p in enumerate(P):  # left padding: every prompt ends at the last column
            ids[row, width - len(p):] = torch.tensor(p)
            mask[row, width - len(p):] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        ids, mask, positions = ids.to(device), mask.to(device), positions.to(device)
        res = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1)
        first = torch.log_softmax(res.logits[:, -1].float(), dim=-1)  # B x V
        scores = torch.zeros((B, n_labels))
        for b in range(B):
            for j in range(n_labels):
                scores[b, j] = first[b, C[b][j][0]]
        rest = max(len(x) for c in C for x in c) - 1
        if rest > 0:
            cache = res.cache if hasattr(res, "cache") else res.past_key_values  # transformers >= 5.2 / older
            cache.batch_repeat_interleave(n_labels)  # row b*n_labels + j = prompt b, label j
            feed = torch.full((B * n_labels, rest), pad_id, dtype=torch.long)
            cmask = torch.zeros((B * n_labels, rest), dtype=torch.long)
            for b in range(B):
                for j in range(n_labels):
                    toks = C[b][j][:-1]  # token t predicts token t+1
                    feed[b * n_labels + j, : len(toks)] = torch.tensor(toks, dtype=torch.long)
                    cmask[b * n_labels + j, : len(toks)] = 1
            lengths = torch.tensor([len(p) for p in P]).repeat_interleave(n_labels)
            cpos = lengths[:, None] + torch.arange(rest)[None, :]
            full_mask = torch.cat([mask.repeat_interleave(n_labels, dim=0), cmask.to(device)], dim=1)
            logits = model(input_ids=feed.to(device), attention_mask=full_mask, position_ids=cpos.to(device),
                           **{cache_keyword(model): cache}, use_cache=True).logits.float()
            logp = torch.log_softmax(logits, dim=-1).cpu()
            for b in range(B):
                for j in range(n_labels):
                    toks = C[b][j]
                    for t in range(1, len(toks)):
                        scores[b, j] += logp[b * n_labels + j, t - 1, toks[t]]
        out.extend(scores.tolist())
    if was_training:
        model.train()
    return out


@torch.inference_mode()
def _separately(model, prompts: Sequence[list[int]], continuations: Sequence[Sequence[list[int]]],
                pad_id: int, batch_size: int = 32) -> list[list[float]]:
    device = _device(model)
    was_training = model.training
    model.eval()
    pairs = [(i, j) for i, c in enumerate(continuations) for j in range(len(c))]
    result = [[0.0] * len(c) for c in continuations]
    head, body = head_and_body(model)
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        seqs = [list(prompts[i]) + list(continuations[i][j]) for i, j in chunk]
        ids, mask = pad_right(seqs, pad_id)
        target = torch.zeros_like(ids, dtype=torch.bool)  # positions whose *next* token is a label token
        for row, ((i, j), s) in enumerate(zip(chunk, seqs)):
            target[row, len(prompts[i]) - 1 : len(s) - 1] = True
        ids, mask = ids.to(device), mask.to(device)
        nxt = torch.roll(ids, -1, dims=1)
        if head is not None:
            hidden = body(input_ids=ids, attention_mask=mask).last_hidden_state
            logits = head(hidden[target.to(device)]).float()
        else:
            logits = model(input_ids=ids, attention_mask=mask).logits[target.to(device)].float()
        lp = torch.log_softmax(logits, dim=-1).gather(1, nxt[target.to(device)][:, None])[:, 0].cpu()
        rows = target.nonzero()[:, 0]
        sums = torch.zeros(len(seqs)).index_add_(0, rows, lp)
        for row, (i, j) in enumerate(chunk):
            result[i][j] = float(sums[row])
    if was_training:
        model.train()
    return result
