"""``adaptlang eval``: run benchmarks on any saved model (a run's stage or a transformers path).

The metrics go to ``MODEL_PATH-eval.json`` (or ``--out FILE``); with ``--run DIR`` they go to a
run folder instead: ``DIR/metrics.json`` (stage ``eval``, the run's name and seed) and
``DIR/config.yaml`` (the resolved config, ``model.name_or_path`` = the model evaluated), which
``adaptlang compare`` takes beside trained runs, e.g. the zero-shot row of Instruct-Align
Table 4 (the starting model evaluated as it is)."""
from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from .benchmarks import check_benchmarks, run_benchmarks
from .config import to_yaml
from .errors import UserError
from .languages import LanguageSet
from .models import load_pretrained
from .pipeline import environment
from .rundir import write_json


def evaluate_path(model_path: str, cfg, out: str | None = None, run_dir: str | None = None) -> Path:
    """Evaluate ``model_path``; returns the metrics file written (see the module docstring)."""
    if out and run_dir:
        raise UserError("eval: give --out FILE or --run DIR, not both")
    languages = LanguageSet.from_config(cfg.languages)
    check_benchmarks(list(cfg.eval.benchmarks), cfg, languages)  # a typo fails before the model loads
    folder = Path(run_dir) if run_dir else None
    target = folder / "metrics.json" if folder else Path(out) if out else Path(str(model_path).rstrip("/") + "-eval.json")
    if folder is not None and folder.exists() and not folder.is_dir():
        raise UserError(f"--run {folder}: a file is there; --run names a folder")
    if target.exists() and not cfg.overwrite:
        raise UserError(f"{target} already exists; pass overwrite=true or another {'--run' if folder else '--out'}")
    model, tokenizer = load_pretrained(model_path, bool(cfg.model.get("trust_remote_code", False)))
    results = run_benchmarks(list(cfg.eval.benchmarks), model, tokenizer, languages, cfg)
    metrics = {"schema": "adaptlang.metrics/1", "model": str(model_path), "status": "complete",
               "environment": environment(), "stages": {"eval": {"eval": results}}}
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        resolved = OmegaConf.merge(cfg, {"model": {"name_or_path": str(model_path)}})
        (folder / "config.yaml").write_text(to_yaml(resolved), encoding="utf-8")
        total = sum(p.numel() for p in model.parameters())
        metrics = {**metrics, "run": folder.name, "seed": cfg.get("seed"), "strategies": [],
                   "model": {"source": str(model_path), "parameters": {"total": total, "trainable": 0},
                             "vocab_size": len(tokenizer)}}
    write_json(target, metrics)
    return target
