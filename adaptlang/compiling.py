"""``train.compile``: torch.compile of the training forward, and the fused AdamW kernel.

torch.compile (TorchDynamo + Inductor) needs a Python version Dynamo supports and, on CPU,
a C++ compiler (Inductor writes C++ kernels); on CUDA, Triton. ``check_compile`` refuses the
setting in the plan, in one line, where that is missing; nothing falls back silently.
"""
from __future__ import annotations

import shutil

import torch

from .errors import UserError

FUSED_ADAMW_DEVICES = ("cpu", "cuda", "mps", "xpu")  # torch>=2.4 has fused AdamW kernels here


def check_compile(device: str) -> None:
    """Refuse ``train.compile=true`` where torch.compile cannot run (``device``: cpu | auto)."""
    import torch._dynamo

    if not torch._dynamo.is_dynamo_supported():
        raise UserError(f"train.compile=true: torch.compile is not supported with this Python/torch "
                        f"(torch {torch.__version__}); use train.compile=false")
    gpu = device != "cpu" and torch.cuda.is_available()
    if gpu:
        try:
            import triton  # noqa: F401
        except ImportError:
            raise UserError("train.compile=true: torch.compile on CUDA needs triton (pip install triton); "
                            "use train.compile=false") from None
    elif not any(shutil.which(c) for c in ("g++", "c++", "clang++")):
        raise UserError("train.compile=true: torch.compile on CPU needs a C++ compiler (g++ or clang++) on PATH; "
                        "use train.compile=false")


def compiled_forward(module):
    """A compiled callable sharing ``module``'s parameters; the module itself is unchanged."""
    return torch.compile(module)


def fused_optimizer_ok(device) -> bool:
    return torch.device(device).type in FUSED_ADAMW_DEVICES
