"""Plugin folders: every module in a package is imported, so that a new strategy, benchmark
or instruction source is one new file (it registers itself on import)."""
from __future__ import annotations

import importlib
import pkgutil


def import_all(package: str) -> None:
    pkg = importlib.import_module(package)
    for info in pkgutil.iter_modules(pkg.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package}.{info.name}")
