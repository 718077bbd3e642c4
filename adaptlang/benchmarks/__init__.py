"""Benchmarks, registered by name: ``fn(model, tokenizer, languages, cfg) -> dict``.

Each result has ``languages`` (per language), ``classes`` (per language class and
``overall``) and ``skipped`` (language -> reason); nothing is dropped silently.
Zero-shot classification tasks are YAML files (``tasks/*.yaml`` and the files or folders in
``eval.classify.task_files``), each registered under its own name (benchmarks/classify.py).
"""
from __future__ import annotations

from ..registry import Registry

BENCHMARKS: Registry = Registry("benchmark")


def register_benchmark(name: str):
    return BENCHMARKS.register(name)


def load_builtin() -> None:
    from ..plugins import import_all

    import_all("adaptlang.benchmarks")


def check_benchmarks(names, cfg, languages=None) -> None:
    """Register the user's task files and check every name (and, where a benchmark has a
    ``check(cfg, languages)`` attribute, its settings) before anything runs."""
    load_builtin()
    from .classify import register_task_files

    register_task_files((cfg.eval.get("classify") or {}).get("task_files"))
    for name in names:
        fn = BENCHMARKS.get(name)
        if languages is not None and hasattr(fn, "check"):
            fn.check(cfg, languages)


def run_benchmarks(names, model, tokenizer, languages, cfg) -> dict:
    check_benchmarks(names, cfg, languages)
    return {name: BENCHMARKS.get(name)(model, tokenizer, languages, cfg) for name in names}
