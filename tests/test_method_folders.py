"""A built-in method is one folder under adaptlang/strategies/ plus its YAML, and it touches
nothing else (issue #26, part 1): no folder imports another method's folder, nothing outside
strategies/ imports a method, no module outside strategies/ serves a single method, and a new
folder dropped into a copy of the package registers, takes its YAML defaults and is ordered by
its phase without an edit to any other file."""
from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import adaptlang

PACKAGE = Path(adaptlang.__file__).parent
STRATEGIES = PACKAGE / "strategies"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports(name: str) -> set[str]:
    """The adaptlang modules ``name`` imports (at the top or inside functions)."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            out |= {t for t in [f"{base}.{a.name}" for a in node.names] + [base] if t in MODULES}
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in MODULES}
    return out


GRAPH = {m: imports(m) for m in MODULES}


def method_folder(name: str) -> str | None:
    """'vocab' for adaptlang.strategies.vocab.merge; None outside a method's folder."""
    parts = name.split(".")
    return parts[2] if parts[:2] == ["adaptlang", "strategies"] and len(parts) > 2 else None


def plugin_packages() -> set[str]:
    """Packages whose modules adaptlang.plugins.import_all loads (instruction sources, benchmarks):
    their modules are registered by name, so one importer does not mean one user."""
    found = set()
    for path in MODULES.values():
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "import_all" and node.args
                    and isinstance(node.args[0], ast.Constant)):
                found.add(node.args[0].value)
    return found


def test_every_built_in_method_is_a_folder():
    loose = [p.name for p in STRATEGIES.glob("*.py") if p.name != "__init__.py"]
    assert loose == [], f"a built-in method is a folder (strategies/<name>/__init__.py), not {loose}"
    folders = sorted(p.name for p in STRATEGIES.iterdir() if p.is_dir() and p.name != "__pycache__")
    assert folders and all((STRATEGIES / f / "__init__.py").is_file() for f in folders)


def test_no_method_folder_imports_another_and_nothing_outside_imports_a_method():
    crossing = sorted(f"{m} -> {t}" for m, targets in GRAPH.items() for t in targets
                      if method_folder(t) and method_folder(m) != method_folder(t))
    assert crossing == []


def test_no_module_outside_the_strategies_serves_a_single_method():
    plugins = plugin_packages()
    assert {"adaptlang.strategies", "adaptlang.instructions"} <= plugins
    single = {}
    for name in MODULES:
        if name.startswith("adaptlang.strategies") or name.rsplit(".", 1)[0] in plugins:
            continue
        users = {m for m, targets in GRAPH.items() if name in targets}
        folders = {method_folder(u) for u in users}
        if users and len(folders) == 1 and None not in folders:
            single[name] = folders.pop()
    assert single == {}, f"used by one method only: move into its folder {single}"


def test_the_checks_above_can_fail():
    assert method_folder("adaptlang.strategies.vocab.merge") == "vocab"
    assert "adaptlang.strategies.replay.buffer" in GRAPH["adaptlang.strategies.replay"]
    assert "adaptlang.strategies.avalanche.bridge" in GRAPH["adaptlang.strategies.avalanche.ewc"]


TOY = '''
"""A toy method: its helper lives in its own folder."""
from ...strategy import Strategy, register_strategy
from .helper import scale


@register_strategy("toy")
class Toy(Strategy):
    phase = "memory"

    def __init__(self, weight: float):
        self.weight = scale(weight)
'''


def test_a_new_built_in_method_is_one_folder_plus_its_yaml(tmp_path):
    copy = tmp_path / "adaptlang"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__", "corpora"))
    (copy / "corpora").symlink_to(PACKAGE / "corpora")
    before = {p.relative_to(copy): p.read_bytes() for p in copy.rglob("*") if p.is_file()}
    folder = copy / "strategies" / "toy"
    folder.mkdir()
    (folder / "__init__.py").write_text(textwrap.dedent(TOY))
    (folder / "helper.py").write_text("def scale(w):\n    return 2 * float(w)\n")
    (copy / "configs" / "strategy" / "toy.yaml").write_text("weight: 0.25\nstages: [adapt]\n")
    after = {p.relative_to(copy): p.read_bytes() for p in copy.rglob("*") if p.is_file()}
    assert {p for p in after if before.get(p) != after[p]} == \
        {Path("strategies/toy/__init__.py"), Path("strategies/toy/helper.py"), Path("configs/strategy/toy.yaml")}
    probe = textwrap.dedent(f'''
        import adaptlang
        assert adaptlang.__file__.startswith({str(tmp_path)!r}), adaptlang.__file__
        from adaptlang import load_config, make_plan
        from adaptlang.composition import compose
        composed = compose("vocab+toy+replay")
        assert composed.names == ["replay", "toy", "vocab"], composed.names
        assert composed.get("toy").weight == 0.5
        plan = make_plan(load_config(["strategy=toy+af"]))
        assert plan.strategy("toy").stages == ("adapt",)
        print("ok")
    ''')
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]
