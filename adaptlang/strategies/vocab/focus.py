"""FOCUS initialisation of new embedding rows (Dobler & de Melo, "FOCUS: Effective Embedding
Initialization for Monolingual Specialization of Multilingual Models", EMNLP 2023, section 3).

A new token's row is a sparse convex combination of the rows of *overlapping* tokens, the
tokens the new-language vocabulary shares with the old one (their rows are trained). The
weights come from auxiliary static embeddings learned on the new-language text tokenized
with the new vocabulary: ``w = sparsemax(cos(x_new, x_o) for o in overlap)`` (their eq. 2-3),
so that a new token borrows from the few old tokens used in the same contexts. New tokens
with no auxiliary embedding (too rare in the text) are drawn from ``N(mean, std)`` of the old
rows, per dimension, as FOCUS does.

Deviation (README, vocab): FOCUS trains fastText (100 dimensions, min count 10) for the
auxiliary embeddings. The authors' ``deepfocus`` package needs ``fasttext`` (a C++ build from
source on our platform), numba and network helpers, so we learn them here from the same text
as the truncated SVD of the token co-occurrence PPMI matrix (window 5, context smoothing
0.75, ``U * sqrt(S)``), which Levy & Goldberg (NeurIPS 2014) and Levy, Goldberg & Dagan (TACL
2015) show to match skip-gram on similarity tasks. Only the source of the static vectors
differs; overlap, similarity, sparsemax and the fallback follow the paper. In our extension
setting the new vocabulary is merged into the old one, so the overlap is the set of the new
model's pieces that the old vocabulary already had (FOCUS's ``extend_tokenizer`` mode).
"""
from __future__ import annotations

from typing import Sequence

import torch

WINDOW = 5
DIM = 100
MIN_COUNT = 3  # FOCUS's fastText uses 10 on large corpora; our vendored text is small
SMOOTHING = 0.75


def token_sequences(tokenizer, texts: Sequence[str]) -> list[list[int]]:
    return tokenizer(list(texts), add_special_tokens=False)["input_ids"]


def static_embeddings(sequences: Sequence[Sequence[int]], seed: int, dim: int = DIM, window: int = WINDOW,
                      min_count: int = MIN_COUNT) -> dict[int, torch.Tensor]:
    """Token id -> auxiliary static vector, for the ids seen at least ``min_count`` times:
    the truncated SVD of the positive PMI matrix of symmetric-window co-occurrence counts."""
    flat = torch.tensor([i for seq in sequences for i in seq], dtype=torch.long)
    if flat.numel() == 0:
        return {}
    ids, counts = torch.unique(flat, return_counts=True)
    kept = ids[counts >= min_count]
    if kept.numel() < 2:
        return {}
    compact = torch.full((int(ids.max()) + 1,), -1, dtype=torch.long)
    compact[kept] = torch.arange(kept.numel())
    n = kept.numel()
    # one row of all sequences, ``window`` separators (-1) between them: no pair crosses a text
    gap = [-1] * window
    row = torch.tensor([i for seq in sequences for i in (*seq, *gap)], dtype=torch.long)
    c = torch.where(row >= 0, compact[row.clamp_min(0)], -1)
    rows, cols = [], []
    for d in range(1, window + 1):
        a, b = c[:-d], c[d:]
        ok = (a >= 0) & (b >= 0)
        rows += [a[ok], b[ok]]
        cols += [b[ok], a[ok]]
    if not any(x.numel() for x in rows):
        return {}
    pairs, together = torch.unique(torch.cat(rows) * n + torch.cat(cols), return_counts=True)
    r, c, together = pairs // n, pairs % n, together.double()
    total = together.sum()
    row_sum = torch.zeros(n, dtype=torch.float64).index_add_(0, r, together)
    context = torch.zeros(n, dtype=torch.float64).index_add_(0, c, together) ** SMOOTHING
    pmi = torch.log(together * context.sum() / (row_sum[r] * context[c])) if total > 0 else together
    positive = pmi > 0
    matrix = torch.sparse_coo_tensor(torch.stack([r[positive], c[positive]]), pmi[positive].float(), (n, n),
                                     check_invariants=False)
    q = min(dim, n - 1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        u, s, _ = torch.svd_lowrank(matrix.coalesce(), q=q, niter=4)
    vectors = u * s.sqrt()
    return {int(t): vectors[k] for k, t in enumerate(kept.tolist())}


def sparsemax(z: torch.Tensor) -> torch.Tensor:
    """Sparsemax over the last dimension (Martins & Astudillo, ICML 2016): the Euclidean
    projection onto the simplex; rows sum to 1 and most entries are exactly 0."""
    ordered, _ = torch.sort(z, dim=-1, descending=True)
    k = torch.arange(1, z.shape[-1] + 1, dtype=z.dtype, device=z.device)
    cumulative = ordered.cumsum(-1)
    support = (1 + k * ordered > cumulative).sum(-1, keepdim=True)
    tau = (cumulative.gather(-1, support - 1) - 1) / support.to(z.dtype)
    return (z - tau).clamp_min(0)


def focus_weights(new_ids: Sequence[int], overlap_ids: Sequence[int], vectors: dict[int, torch.Tensor],
                  chunk: int = 1024) -> tuple[list[int], torch.Tensor, list[int]]:
    """(new ids with a vector, their sparsemax weights over ``overlap`` (rows sum to 1), the
    overlap ids used). Overlap ids without a vector are left out, as FOCUS does."""
    overlap = [i for i in overlap_ids if i in vectors]
    covered = [i for i in new_ids if i in vectors]
    if not overlap or not covered:
        return [], torch.zeros(0, len(overlap)), overlap
    o = torch.nn.functional.normalize(torch.stack([vectors[i] for i in overlap]), dim=-1)
    weights = []
    for start in range(0, len(covered), chunk):
        x = torch.nn.functional.normalize(torch.stack([vectors[i] for i in covered[start:start + chunk]]), dim=-1)
        weights.append(sparsemax(x @ o.T))
    return covered, torch.cat(weights), overlap


def init_rows(weight: torch.Tensor, new_ids: Sequence[int], n_old: int, covered: Sequence[int],
              weights: torch.Tensor, overlap: Sequence[int], seed: int) -> None:
    """Fill ``weight[new_ids]`` in place: a FOCUS combination of the overlap rows for the
    covered ids, ``N(mean, std)`` of the old rows (per dimension) for the rest."""
    with torch.no_grad():
        old = weight[:n_old].float()
        rows = {}
        if covered:
            combined = weights.to(old) @ old[torch.tensor(list(overlap), device=weight.device)]
            rows = dict(zip(covered, combined))
        rest = [i for i in new_ids if i not in rows]
        if rest:
            generator = torch.Generator().manual_seed(seed)
            draws = torch.randn(len(rest), old.shape[1], generator=generator).to(old)
            rows.update(zip(rest, old.mean(0) + draws * old.std(0)))
        index = torch.tensor(list(new_ids), dtype=torch.long, device=weight.device)
        weight.index_copy_(0, index, torch.stack([rows[i] for i in new_ids]).to(weight.dtype))
