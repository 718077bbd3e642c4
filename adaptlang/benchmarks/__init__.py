"""Benchmarks, registered by name: ``fn(model, tokenizer, languages, cfg) -> dict``.

Each result has ``languages`` (per language), ``classes`` (per language class and
``overall``) and ``skipped`` (language -> reason); nothing is dropped silently.
Zero-shot classification tasks are YAML files (``tasks/*.yaml`` and the files or folders in
``eval.classify.task_files``), each registered under its own name (benchmarks/classify.py).
"""
from __future__ import annotations

from ..errors import UserError, listing, suggest
from ._common import BENCHMARKS, register_benchmark  # noqa: F401  (the registry lives below the plugins)


def load_builtin() -> None:
    from ..plugins import import_all

    import_all("adaptlang.benchmarks")


def resolve_benchmarks(names, cfg, languages=None) -> dict:
    """name -> benchmark function, for the built-in benchmarks (incl. ``tasks/*.yaml``) and the
    task files in ``eval.classify.task_files`` (these are looked up per call, never registered
    globally). Where a benchmark has a ``check(cfg, languages)`` attribute its settings are
    checked too, so that mistakes surface before anything runs."""
    load_builtin()
    from .classify import task_benchmark, user_tasks

    user = user_tasks((cfg.eval.get("classify") or {}).get("task_files"))
    out = {}
    for name in names:
        if name in user:
            fn = task_benchmark(user[name])
        elif name in BENCHMARKS:
            fn = BENCHMARKS.get(name)
        else:
            known = list(BENCHMARKS) + list(user)
            raise UserError(f"unknown benchmark '{name}' in eval.benchmarks.{suggest(name, known)} Valid: {listing(known)}"
                            " (or a task YAML listed in eval.classify.task_files)")
        if languages is not None and hasattr(fn, "check"):
            fn.check(cfg, languages)
        out[name] = fn
    return out


def check_benchmarks(names, cfg, languages=None) -> None:
    resolve_benchmarks(names, cfg, languages)


def run_benchmarks(names, model, tokenizer, languages, cfg) -> dict:
    fns = resolve_benchmarks(names, cfg, languages)
    return {name: fn(model, tokenizer, languages, cfg) for name, fn in fns.items()}
