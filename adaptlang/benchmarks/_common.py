"""Helpers shared by benchmarks (a leading underscore: not a plugin, never auto-registered)."""
from __future__ import annotations

from typing import Iterable

from ..registry import Registry

BENCHMARKS: Registry = Registry("benchmark")


def register_benchmark(name: str):
    return BENCHMARKS.register(name)


def means_by_group(per_language: dict, groups: dict[str, Iterable[str]], metrics: Iterable[str]) -> dict:
    """Unweighted mean of each metric over each group's measured languages, plus ``overall``
    (all measured languages). Groups without a measured language are left out."""
    metrics = list(metrics)
    groups = {g: [c for c in codes if c in per_language] for g, codes in groups.items()}
    groups["overall"] = list(per_language)
    out = {}
    for group, codes in groups.items():
        if codes:
            out[group] = {m: sum(per_language[c][m] for c in codes) / len(codes) for m in metrics}
            out[group]["n_languages"] = len(codes)
    return out


def resolve_codes(spec, languages) -> list[str]:
    """``all`` / a class name / a list of codes -> codes (through the language set)."""
    if spec is None:
        return languages.all_codes()
    return languages.resolve(list(spec) if not isinstance(spec, str) else spec)
