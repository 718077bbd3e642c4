"""Hand a benchmark's key figures to bench/run_all.py: one JSON line appended to the file
named by ADAPTLANG_BENCH_OUT (nothing happens when a script runs on its own)."""
from __future__ import annotations

import json
import os


def emit(bench: str, **figures) -> None:
    path = os.environ.get("ADAPTLANG_BENCH_OUT")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"bench": bench, **figures}) + "\n")
