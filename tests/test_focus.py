"""FOCUS initialisation (adaptlang.strategies.vocab.focus): sparsemax, static embeddings that see shared
contexts, and new rows built from the overlapping tokens they share contexts with."""
import random

import torch

from adaptlang.strategies.vocab import focus


def test_sparsemax_projects_onto_the_simplex():
    z = torch.tensor([[1.0, 0.5, -1.0], [0.1, 0.1, 0.1], [3.0, 0.0, 0.0], [0.2, 0.9, 0.85]])
    p = focus.sparsemax(z)
    assert torch.allclose(p.sum(-1), torch.ones(4))
    assert torch.allclose(p[0], torch.tensor([0.75, 0.25, 0.0]))  # worked by hand: tau = 0.25
    assert torch.allclose(p[1], torch.full((3,), 1 / 3))
    assert torch.equal(p[2], torch.tensor([1.0, 0.0, 0.0]))
    assert p[3, 0] == 0 and p[3, 1] > p[3, 2] > 0


def corpus(seed=0):
    """Old ids 0..39; new id 50 is used exactly where old id 7 is (same contexts), new id 51
    where old id 9 is; new id 52 never occurs."""
    rng = random.Random(seed)
    sequences = []
    for _ in range(600):
        left, right = rng.sample(range(20, 40), 2), rng.sample(range(20, 40), 2)
        for middle, twin in ((7, 50), (9, 51)):
            ctx_l = [x + (0 if middle == 7 else 100) for x in left]  # 7 and 9 live in disjoint contexts
            ctx_r = [x + (0 if middle == 7 else 100) for x in right]
            sequences.append(ctx_l + [middle] + ctx_r)
            sequences.append(ctx_l + [twin] + ctx_r)
        sequences.append([rng.randrange(0, 40) for _ in range(6)])
    return sequences


def test_a_new_token_borrows_the_row_of_the_old_token_that_shares_its_contexts():
    vectors = focus.static_embeddings(corpus(), seed=0, dim=16, min_count=3)
    assert 52 not in vectors and {7, 9, 50, 51} <= set(vectors)
    cos = lambda a, b: float(torch.nn.functional.cosine_similarity(vectors[a], vectors[b], dim=0))  # noqa: E731
    assert cos(50, 7) > 0.9 and cos(51, 9) > 0.9 and cos(50, 9) < 0.5
    overlap = list(range(0, 40))
    covered, weights, used = focus.focus_weights([50, 51, 52], overlap, vectors)
    assert covered == [50, 51] and torch.allclose(weights.sum(-1), torch.ones(2))
    assert used[int(weights[0].argmax())] == 7 and used[int(weights[1].argmax())] == 9
    torch.manual_seed(0)
    weight = torch.randn(60, 8)
    old = weight[:40].clone()
    focus.init_rows(weight, [50, 51, 52], 40, covered, weights, used, seed=3)
    assert torch.allclose(weight[50], weights[0] @ old[torch.tensor(used)])
    assert torch.nn.functional.cosine_similarity(weight[50], old[7], dim=0) > 0.8
    assert torch.nn.functional.cosine_similarity(weight[51], old[9], dim=0) > 0.8
    # the token with no static vector: N(mean, std) of the old rows, seeded
    again = torch.randn(60, 8)
    again[:40] = old
    focus.init_rows(again, [50, 51, 52], 40, covered, weights, used, seed=3)
    assert torch.equal(again[52], weight[52]) and not torch.allclose(weight[52], old.mean(0))
    assert torch.equal(weight[:40], old)


def test_static_embeddings_are_seeded():
    a = focus.static_embeddings(corpus(1), seed=5, dim=8)
    b = focus.static_embeddings(corpus(1), seed=5, dim=8)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
