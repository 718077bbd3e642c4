"""Experiment trackers through accelerate (``train.report_to``): tensorboard, trackio, wandb, mlflow.

    adaptlang run train.report_to=tensorboard            # -> runs/<name>/trackers/adaptlang/events.*
    adaptlang run train.report_to=[tensorboard,wandb]

The plan checks the names and that each tracker's package is importable (one line, nothing
written). The pipeline creates the Accelerator with ``log_with`` and ``project_dir`` =
``runs/<name>/trackers``, calls ``init_trackers`` with the flattened resolved config, and logs
per optimizer step ``train/loss``, ``train/lr``, ``train/tokens_per_second`` (one step axis
across stages) and after each stage every benchmark figure as ``eval/<benchmark>/<language or
class>/<metric>`` at the stage's last step; ``end_training`` closes them.
"""
from __future__ import annotations

import importlib.util
from typing import Any

from .errors import UserError, listing, suggest

PROJECT = "adaptlang"
# tracker -> (the module that must import, the pip package to install)
TRACKERS = {"tensorboard": ("tensorboard", "tensorboard"), "trackio": ("trackio", "trackio"),
            "wandb": ("wandb", "wandb"), "mlflow": ("mlflow", "mlflow")}


def tracker_names(value: Any) -> list[str]:
    """``train.report_to`` as a list: a name, a list of names, 'none' or empty."""
    if value is None:
        return []
    names = [value] if isinstance(value, str) else [str(v) for v in value]
    return [n for n in names if n not in ("none", "")]


def check_trackers(value: Any) -> list[str]:
    names = tracker_names(value)
    for name in names:
        if name not in TRACKERS:
            raise UserError(f"train.report_to: unknown tracker '{name}'.{suggest(name, TRACKERS)} "
                            f"Valid: {listing(TRACKERS)} (or [] for none)")
        module, package = TRACKERS[name]
        if importlib.util.find_spec(module) is None:
            raise UserError(f"train.report_to: tracker '{name}' needs the package '{package}', which is not "
                            f"installed (pip install {package})")
    return names


def flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts/lists -> {"a/b/0": leaf}; leaves kept as they are."""
    if isinstance(tree, dict):
        items = tree.items()
    elif isinstance(tree, (list, tuple)):
        items = enumerate(tree)
    else:
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in items:
        out.update(flat(value, f"{prefix}/{key}" if prefix else str(key)))
    return out


def hyperparameters(config: dict) -> dict[str, Any]:
    """The resolved config as scalars (tensorboard's hparams accept int/float/str/bool)."""
    return {k.replace("/", "."): v if isinstance(v, (int, float, str, bool)) else str(v)
            for k, v in flat(config).items()}


def benchmark_figures(results: dict) -> dict[str, float]:
    """Every numeric figure of a stage's benchmarks, per language and per class."""
    out = {}
    for name, result in results.items():
        for part in ("classes", "languages"):
            for key, value in flat(result.get(part) or {}).items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    out[f"eval/{name}/{key}"] = value
    return out


def init_kwargs(names: list[str], run: str) -> dict:
    """Each tracker's own run name (tensorboard takes the project name as its folder)."""
    kwargs = {"wandb": {"name": run}, "mlflow": {"run_name": run}, "trackio": {"name": run}}
    return {n: kwargs[n] for n in names if n in kwargs}
