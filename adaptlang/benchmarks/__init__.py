"""Benchmarks, registered by name: ``fn(model, tokenizer, languages, cfg) -> dict``.

Each result has ``languages`` (per language), ``classes`` (per language class and
``overall``) and ``skipped`` (language -> reason); nothing is dropped silently.
"""
from __future__ import annotations

from ..registry import Registry

BENCHMARKS: Registry = Registry("benchmark")


def register_benchmark(name: str):
    return BENCHMARKS.register(name)


def load_builtin() -> None:
    from ..plugins import import_all

    import_all("adaptlang.benchmarks")


def run_benchmarks(names, model, tokenizer, languages, cfg) -> dict:
    load_builtin()
    return {name: BENCHMARKS.get(name)(model, tokenizer, languages, cfg) for name in names}
