"""FLOPs adaptlang's training loop executes (for MFU and FLOP-rate comparisons)."""
from __future__ import annotations


def executed_flops(body: int, head: int, layers: int, hidden: int, seq_len: float, tokens: int, loss_tokens: int,
                   frozen_body: bool = False) -> float:
    """The body (``body`` parameters) on every token: 6N for forward + backward, 4N when it is
    frozen (activations' gradients, no weight gradients); attention 12*L*d*T with T the
    example length (packing keeps attention within an example); and the LM head (``head``
    parameters, 6*V*d) only on the tokens with a label."""
    return ((4 if frozen_body else 6) * body + 12 * layers * hidden * seq_len) * tokens + 6 * head * loss_tokens


def matmul_peak(n: int = 1024, repeat: int = 10) -> float:
    """fp32 FLOP/s of a 1024^3 torch.mm on this machine now: the peak MFU figures divide by."""
    import time

    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    start = time.perf_counter()
    for _ in range(repeat):
        torch.mm(a, b)
    return 2 * n**3 * repeat / (time.perf_counter() - start)
