"""The shape of the code (issue #14): no import cycles, strategy defaults written once, one
seed per purpose, strategies that cannot leak their changes into other stages, and the
README's custom-strategy example as a tested file."""
from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest
import torch

import adaptlang
from adaptlang import UserError, load_config
from adaptlang.composition import option_names, strategy_defaults
from adaptlang.seeds import derive_seed
from adaptlang.stage_runner import model_shape, restore_ownership
from adaptlang.strategy import STRATEGIES, Strategy, load_plugins
from adaptlang.yamlfiles import CONFIG_ROOT

from conftest import QUICK

PACKAGE = Path(adaptlang.__file__).parent
README = PACKAGE.parent / "README.md"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """adaptlang module -> adaptlang modules it imports, at the top or inside functions."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [f"{base}.{a.name}" for a in node.names] + [base]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            for target in targets:
                if target in modules and target != name:
                    graph[name].add(target)
                    break
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles_even_through_imports_inside_functions():
    graph = import_graph()
    assert "adaptlang.plan" in graph and "adaptlang.composition" in graph["adaptlang.plan"]
    assert cycles(graph) == []


def test_built_in_strategy_defaults_are_written_once_in_their_yaml():
    load_plugins()
    for name in STRATEGIES.names():
        cls = STRATEGIES.get(name)
        path = CONFIG_ROOT / "strategy" / f"{name}.yaml"
        if cls.__module__.startswith("adaptlang.strategies."):
            assert path.is_file(), name
            params = inspect.signature(cls.__init__).parameters
            assert all(p.default is inspect.Parameter.empty for n, p in params.items() if n != "self"), name
            assert "stages" not in vars(cls), f"{name}: stages belong in {path.name}"
        if path.is_file():
            yaml_keys = set(strategy_defaults(name)) - {"stages"}
            assert yaml_keys == set(option_names(cls)), name


def test_seeds_differ_per_run_stage_and_purpose_and_are_stable():
    seeds = {derive_seed(s, st, p) for s in (0, 1) for st in ("pretrain", "adapt") for p in ("data", "init")}
    assert len(seeds) == 8
    assert derive_seed(0, "adapt", "data") == derive_seed(0, "adapt", "data") < 2**32
    code = "\n".join(p.read_text() for p in PACKAGE.rglob("*.py") if p.name != "seeds.py")
    assert not re.search(r"seed\s*[*+]\s*\d|1_000_003|7919", code), "seed arithmetic outside adaptlang.seeds"


class _Leaky(Strategy):
    def setup_model(self, model, tokenizer, ctx):
        model.get_input_embeddings().register_forward_hook(lambda *a: None)
        return model, tokenizer


def test_a_strategy_that_leaves_a_hook_behind_is_caught(model):
    before = model_shape(model)
    _Leaky().setup_model(model, None, None)
    with pytest.raises(RuntimeError, match="hooks left behind .strategies: _leaky"):
        _Leaky.name = "_leaky"
        restore_ownership(model, before, [_Leaky()], "adapt")


def test_requires_grad_is_restored_and_undeclared_resizes_are_refused(model):
    before = model_shape(model)
    for p in model.parameters():
        p.requires_grad_(False)
    restore_ownership(model, before, [], "adapt")
    assert all(p.requires_grad for p in model.parameters())
    model.resize_token_embeddings(model.config.vocab_size + 8)
    with pytest.raises(RuntimeError, match="changed shape"):
        restore_ownership(model, before, [], "adapt")


def readme_strategy_example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    return next(b for b in blocks if '@register_strategy("freeze_body")' in b)


@pytest.mark.slow
def test_the_readme_custom_strategy_runs_and_its_freeze_does_not_leak(tmp_path):
    namespace: dict = {}
    exec(compile(readme_strategy_example(), "README.md", "exec"), namespace)
    try:
        langs = tmp_path / "langs.yaml"
        langs.write_text("classes:\n  pretraining: [en, fr]\n  adapting: [nl, de]\n  other: [sv]\n")
        cfg = load_config(["strategy=freeze_body", *QUICK, f"languages={langs}", "model.tokenizer.vocab_size=600",
                           f"output_dir={tmp_path}"])
        assert adaptlang.make_plan(cfg).strategy("freeze_body").stages == ("adapt",)
        path = adaptlang.run(cfg)
        import json

        stages = json.loads((path / "metrics.json").read_text())["stages"]
        adapt, instruct = stages["adapt"]["parameters"], stages["instruct"]["parameters"]
        assert adapt["trainable"] < adapt["total"]  # the freeze acted in its stage
        assert instruct["trainable"] == instruct["total"]  # and did not leak into the next
        from safetensors.torch import load_file

        w = {s: load_file(str(path / "stages" / s / "model" / "model.safetensors")) for s in stages}
        body = [k for k in w["adapt"] if "layers." in k]
        assert body and all(torch.equal(w["pretrain"][k], w["adapt"][k]) for k in body)
        assert any(not torch.equal(w["adapt"][k], w["instruct"][k]) for k in body)
    finally:
        STRATEGIES.unregister("freeze_body")


def test_a_plugin_without_yaml_takes_its_init_defaults_and_refuses_unknown_options():
    class _Opt(Strategy):
        stages = ("adapt",)

        def __init__(self, k: int = 3):
            self.k = k

    from adaptlang.strategy import register_strategy

    register_strategy("_opt")(_Opt)
    try:
        assert strategy_defaults("_opt") == {"k": 3, "stages": ["adapt"]}
        with pytest.raises(UserError, match="Did you mean 'k'"):
            adaptlang.make_plan(load_config(["strategy=_opt", "strategy._opt.kk=1"]))
    finally:
        STRATEGIES.unregister("_opt")
