"""``train.compile``: torch.compile of the training forward. (Fused AdamW, once part of this
setting, is the loop's default wherever torch has the kernel: adaptlang.train.)

The loop (adaptlang.train) compiles, on its LM-head shortcut, the model's body and
``head_loss`` (the head's projection + cross-entropy of the labelled positions, where
Inductor fuses the log-softmax); otherwise the whole model's forward. Where the eager fused
head loss applies (a plain head on CPU, adaptlang.fused_loss) the loop keeps it instead of
the compiled ``head_loss``: it measured faster than Inductor's code for the head there
(bench/perf_compile.py; compiled on its own, the softmax-gradient step of one 524 x 8000
chunk ran 2.5x slower than eager's).

torch.compile (TorchDynamo + Inductor) needs a Python version Dynamo supports and, on CPU,
a C++ compiler (Inductor writes C++ kernels); on CUDA, Triton. ``check_compile`` refuses the
setting in the plan, in one line, where that is missing. Where compilation still fails at the
first step (a backend error: ``BackendCompilerFailed``), the loop logs one line to stderr and
train.log and continues eagerly (``Compilation``); metrics.json's ``train.compiled`` says
which one ran.
"""
from __future__ import annotations

import logging
import shutil
import sys

import torch

from .errors import UserError

log = logging.getLogger("adaptlang")
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


class Compilation:
    """The compiled pieces of one stage's loop. On a backend failure in any of them: one
    logged line, and every piece runs uncompiled from then on."""

    def __init__(self, compile_fn=None):
        self.compile_fn = compile_fn or torch.compile
        self.active = True

    def __call__(self, fn) -> "CompiledForward":
        return CompiledForward(fn, self)

    def fail(self, exc: Exception) -> None:
        if not self.active:
            return
        self.active = False
        cause = getattr(exc, "inner_exception", None) or exc
        text = str(cause).strip()
        first = f"{type(cause).__name__}: {text.splitlines()[0][:300] if text else ''}"
        message = f"train.compile: torch.compile failed ({first}); training continues without compiling"
        log.warning("%s", message)
        print(f"adaptlang: warning: {message}", file=sys.stderr)


class CompiledForward:
    """``fn`` (a module or a function) compiled, sharing its parameters; ``fn`` itself once the
    stage's compilation has failed."""

    def __init__(self, fn, compilation: Compilation):
        self.fn, self.compilation = fn, compilation
        self.compiled = compilation.compile_fn(fn)

    def __call__(self, *args, **kwargs):
        if self.compilation.active:
            from torch._dynamo.exc import BackendCompilerFailed

            try:
                return self.compiled(*args, **kwargs)
            except BackendCompilerFailed as exc:
                self.compilation.fail(exc)
        return self.fn(*args, **kwargs)


def fused_optimizer_ok(device) -> bool:
    return torch.device(device).type in FUSED_ADAMW_DEVICES
