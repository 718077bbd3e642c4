"""The fused LM-head cross-entropy (adaptlang.fused_loss) gives the unfused loss and gradients."""
import pytest
import torch

from adaptlang import fused_loss
from adaptlang.fused_loss import fuses, linear_cross_entropy


def unfused(hidden, weight, targets):
    return torch.nn.functional.cross_entropy(hidden @ weight.t(), targets)


@pytest.mark.parametrize("rows", [1, 63, 64, 200])  # one row, under one chunk, exactly one, several
def test_loss_and_gradients_match_the_unfused_ones(monkeypatch, rows):
    monkeypatch.setattr(fused_loss, "CHUNK_ELEMENTS", 64 * 300)  # 64-row chunks of a 300-piece vocabulary
    g = torch.Generator().manual_seed(rows)
    hidden0, weight0 = torch.randn(rows, 16, generator=g), torch.randn(300, 16, generator=g)
    targets = torch.randint(0, 300, (rows,), generator=g)
    results = []
    for fn in (unfused, linear_cross_entropy):
        hidden, weight = hidden0.clone().requires_grad_(), weight0.clone().requires_grad_()
        loss = fn(hidden, weight, targets)
        (3.0 * loss).backward()  # a scaled loss (gradient accumulation divides it) scales the gradients
        results.append((loss.detach(), hidden.grad, weight.grad))
    for ours, theirs in zip(results[1], results[0]):
        assert torch.allclose(ours, theirs, rtol=1e-5, atol=1e-6)


def test_a_frozen_head_gets_no_gradient_and_the_hidden_states_do():
    hidden = torch.randn(10, 8, requires_grad=True)
    weight = torch.randn(50, 8)
    targets = torch.randint(0, 50, (10,))
    linear_cross_entropy(hidden, weight, targets).backward()
    expected = torch.autograd.grad(unfused(hidden, weight, targets), hidden)[0]
    assert weight.grad is None and torch.allclose(hidden.grad, expected, atol=1e-6)


def test_only_a_plain_hookless_bias_free_cpu_head_is_fused():
    hidden = torch.randn(4, 8)
    assert fuses(torch.nn.Linear(8, 50, bias=False), hidden)
    assert not fuses(torch.nn.Linear(8, 50), hidden)                   # a bias
    assert not fuses(torch.nn.Linear(8, 50, bias=False), hidden[:0])   # nothing to score
    hooked = torch.nn.Linear(8, 50, bias=False)
    hooked.register_forward_hook(lambda *a: None)
    assert not fuses(hooked, hidden)                                   # a strategy's hook must run
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not fuses(torch.nn.Linear(8, 50, bias=False), hidden)   # mixed precision: the plain path


def test_train_compile_keeps_the_eager_fused_head_loss_where_it_applies():
    from adaptlang.train import fused_or

    calls = []

    def compiled(head, hidden, targets):
        calls.append(head)
        return unfused(hidden, head.weight, targets)

    head_loss = fused_or(compiled)  # what train.compile uses, with Inductor's head_loss as the fallback
    hidden, targets = torch.randn(6, 8), torch.randint(0, 50, (6,))
    plain, biased = torch.nn.Linear(8, 50, bias=False), torch.nn.Linear(8, 50)
    assert torch.allclose(head_loss(plain, hidden, targets), unfused(hidden, plain.weight, targets), atol=1e-6)
    assert calls == []                       # CPU, plain head: the eager fused loss, not Inductor's code
    head_loss(biased, hidden, targets)
    assert calls == [biased]                 # anything the fused loss cannot take goes to the compiled one


def test_a_second_backward_through_the_same_graph_is_refused_not_wrong():
    """The backward scales the kept gradients in place; running it twice must fail loudly."""
    hidden = torch.randn(5, 8, requires_grad=True)
    weight = torch.randn(30, 8, requires_grad=True)
    loss = linear_cross_entropy(hidden, weight, torch.randint(0, 30, (5,)))
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_a_bf16_head_gives_the_unfused_loss_and_gradients_within_bf16_rounding():
    g = torch.Generator().manual_seed(5)
    hidden0, weight0 = torch.randn(70, 16, generator=g), torch.randn(300, 16, generator=g)
    targets = torch.randint(0, 300, (70,), generator=g)
    results = []
    for fn in (lambda h, w, t: torch.nn.functional.cross_entropy((h @ w.t()).float(), t), linear_cross_entropy):
        hidden = hidden0.to(torch.bfloat16).requires_grad_()
        weight = weight0.to(torch.bfloat16).requires_grad_()
        loss = fn(hidden, weight, targets)
        loss.backward()
        assert loss.dtype == torch.float32 and hidden.grad.dtype == weight.grad.dtype == torch.bfloat16
        results.append((loss.detach(), hidden.grad.float(), weight.grad.float()))
    for ours, theirs in zip(results[1], results[0]):
        assert torch.allclose(ours, theirs, rtol=2e-2, atol=2e-3)


def test_no_rows_give_nan_not_an_error():
    hidden, weight = torch.randn(0, 8, requires_grad=True), torch.randn(50, 8, requires_grad=True)
    loss = linear_cross_entropy(hidden, weight, torch.zeros(0, dtype=torch.long))
    assert torch.isnan(loss)  # the mean of nothing, as F.cross_entropy gives
