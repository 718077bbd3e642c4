"""The LM head's projection and cross-entropy in one autograd step, a chunk of rows at a time.

``F.cross_entropy(hidden @ weight.T, targets)`` materialises the (tokens x vocabulary) logits,
writes their log-softmax, zero-fills a gradient of the same size and reads both again in the
backward pass. On a CPU that is memory traffic the matmuls do not need: in the tiny default
model's training loop log-softmax forward + backward and that zero-fill took ~25% of the time
(torch.profiler, bench/perf_train.py). Here each chunk of rows computes its logits (into one
buffer that every chunk reuses), their log-sum-exp, the loss and -- since the loss is a mean,
its gradient is known in the forward -- the softmax gradient in place, while the chunk is
still in cache; the backward pass only scales the two gradients it kept (in place: a second
backward through the same graph is refused by autograd's version check). Same matmuls, same result up to float rounding
(tests/test_fused_loss.py: loss and gradients within 1e-5 of the unfused ones).

The idea is that of Liger-Kernel's fused linear cross-entropy (also chunked, for memory on
GPUs); the loop (adaptlang.train.head_loss) uses it on CPU only, where it was measured.
"""
from __future__ import annotations

import torch

CHUNK_ELEMENTS = 1 << 22  # logits per chunk (16 MB in fp32): 524 rows of the tiny model's 8000-piece vocabulary


class LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets):
        n, vocab = hidden.shape[0], weight.shape[0]
        chunk = max(1, min(n, max(64, CHUNK_ELEMENTS // vocab)))
        need_hidden, need_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_hidden = torch.empty_like(hidden) if need_hidden else None
        grad_weight = torch.empty_like(weight) if need_weight else None  # the first chunk writes it
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        rows = torch.arange(chunk, device=hidden.device)
        # one logits buffer for every chunk, and one exp pass over it (logsumexp would allocate
        # and exponentiate a copy): 55 -> 35 ms for the default instruct stage's 1,318 labelled
        # tokens a step against 8000 pieces (forward + backward, 2 threads)
        buffer = torch.empty((chunk, vocab), dtype=torch.float32, device=hidden.device)
        for start in range(0, n, chunk):
            h, y = hidden[start:start + chunk], targets[start:start + chunk]
            r, logits = rows[: len(y)], buffer[: len(y)]
            if weight.dtype == torch.float32:
                torch.mm(h, weight.t(), out=logits)
            else:
                logits.copy_(h @ weight.t())
            target_logits = logits[r, y]
            peak = logits.amax(dim=1, keepdim=True)
            sums = logits.sub_(peak).exp_().sum(dim=1)  # exp(logit - max), the stable softmax's numerator
            total += (peak.squeeze(1) + sums.log() - target_logits).sum()  # log-sum-exp - target logit
            grad = logits.mul_(sums.reciprocal_()[:, None])  # softmax ...
            grad[r, y] -= 1.0                                 # ... minus the one-hot target: d(sum of losses)/d(logits)
            grad = grad.to(weight.dtype)
            if need_hidden:
                torch.mm(grad, weight, out=grad_hidden[start:start + chunk])
            if need_weight and start == 0:
                torch.mm(grad.t(), h, out=grad_weight)
            elif need_weight:
                grad_weight.addmm_(grad.t(), h)
        ctx.save_for_backward(grad_hidden, grad_weight)
        ctx.n = n
        return total / n

    @staticmethod
    def backward(ctx, grad_loss):
        grad_hidden, grad_weight = ctx.saved_tensors
        scale = grad_loss / ctx.n
        return (grad_hidden.mul_(scale.to(grad_hidden.dtype)) if grad_hidden is not None else None,
                grad_weight.mul_(scale.to(grad_weight.dtype)) if grad_weight is not None else None, None)


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of ``hidden @ weight.T`` (rows x vocabulary) against ``targets``."""
    return LinearCrossEntropy.apply(hidden, weight, targets)


def fuses(head, hidden: torch.Tensor) -> bool:
    """Whether ``head`` is a plain bias-free linear layer (no hooks, no adapter wrapper) that
    ``linear_cross_entropy`` can replace, on CPU without autocast, with rows to score."""
    return (type(head) is torch.nn.Linear and head.bias is None and hidden.device.type == "cpu"
            and hidden.shape[0] > 0 and not torch.is_autocast_enabled("cpu")
            and not head._forward_hooks and not head._forward_pre_hooks)
