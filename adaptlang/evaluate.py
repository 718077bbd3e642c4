"""``adaptlang eval``: run benchmarks on any saved model (a run's stage or a transformers path)."""
from __future__ import annotations

from pathlib import Path

from .benchmarks import check_benchmarks, run_benchmarks
from .errors import UserError
from .languages import LanguageSet
from .models import load_pretrained
from .pipeline import environment
from .rundir import write_json


def evaluate_path(model_path: str, cfg, out: str | None = None) -> Path:
    languages = LanguageSet.from_config(cfg.languages)
    check_benchmarks(list(cfg.eval.benchmarks), cfg, languages)  # a typo fails before the model loads
    model, tokenizer = load_pretrained(model_path, bool(cfg.model.get("trust_remote_code", False)))
    target = Path(out) if out else Path(str(model_path).rstrip("/") + "-eval.json")
    if target.exists() and not cfg.overwrite:
        raise UserError(f"{target} already exists; pass overwrite=true or --out another file")
    results = run_benchmarks(list(cfg.eval.benchmarks), model, tokenizer, languages, cfg)
    write_json(target, {"schema": "adaptlang.metrics/1", "model": str(model_path), "status": "complete",
                        "environment": environment(), "stages": {"eval": {"eval": results}}})
    return target
