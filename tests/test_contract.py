"""The contract every registered strategy keeps, built-in or plugin (issues #14 and #20).

The registry is enumerated when the tests are collected, so a new strategy joins every test
here without editing this file. On a small, real pipeline (the default experiment's three
stages on 2 + 2 languages, a few steps each):

* every pair of strategies, and every combination of three or more that a shipped config or
  the README or the docs use, either completes a run whose metrics.json is complete, or is refused by
  the plan before training with one line, leaving nothing behind;
* every strategy alone: a run killed in the last stage it acts in and resumed ends bit for
  bit where the uninterrupted run ends (model, losses, strategy state, tensors included);
  its saved state round-trips through state_dict / load_state_dict; the saved models are
  plain transformers models (nothing a strategy wrapped is left behind).
"""
from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import pytest
import torch
import yaml

import adaptlang
from adaptlang import UserError, load_config
from adaptlang.composition import compose
from adaptlang.plan import make_plan
from adaptlang.state_io import load_state
from adaptlang.strategy import STRATEGIES, Strategy, load_plugins, register_strategy
from adaptlang.yamlfiles import CONFIG_ROOT

from conftest import QUICK

pytestmark = pytest.mark.slow

load_plugins()
NAMES = sorted(n for n in STRATEGIES.names() if not n.startswith("_"))

# Options that keep each built-in strategy's work small; a strategy not listed runs with its defaults.
SMALL_OPTIONS = {
    "af": ["strategy.af.every=2"],
    "vocab": ["strategy.vocab.vocab_size=500", "strategy.vocab.character_coverage=0.99", "strategy.vocab.protect=en",
              "strategy.vocab.fertility=none"],
    "replay": ["strategy.replay.size=16"],
    "ewc": ["strategy.ewc.fisher_batches=1"],
    "agem": ["strategy.agem.patterns_per_experience=8", "strategy.agem.sample_size=2"],
    "xling": ["strategy.xling.max_pairs=20", "strategy.xling.bitext=[flores]"],
    "mlm": ["strategy.mlm.max_sentences=20", "strategy.mlm.text=[flores]"],
    "merge": ["strategy.merge.method=dare_ties", "strategy.merge.density=0.5"],  # seeded masks across a resume
}


def used_combinations() -> list[tuple[str, ...]]:
    """Compositions of three or more strategies written in the README, the docs or a shipped config."""
    root = Path(__file__).parents[1]
    texts = [(root / "README.md").read_text()] + [p.read_text() for p in sorted((root / "docs").rglob("*.md"))]
    texts += [p.read_text() for p in CONFIG_ROOT.rglob("*.yaml")]
    found = set()
    for text in texts:
        for spec in re.findall(r"strategy=([a-z_]+(?:\+[a-z_]+)+)", text):
            names = tuple(spec.split("+"))
            if len(names) >= 3 and all(n in NAMES for n in names):
                found.add(names)
    return sorted(found)


@pytest.fixture(scope="module")
def small_languages(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("langs") / "small.yaml"
    path.write_text("classes:\n  pretraining: [en, fr]\n  adapting: [nl, de]\n  other: [sv]\n")
    return str(path)


def overrides(names, languages: str, out: Path, *extra) -> list[str]:
    return [f"strategy={'+'.join(names)}", *QUICK, f"languages={languages}", "model.tokenizer.vocab_size=600",
            f"output_dir={out}", *[o for n in names for o in SMALL_OPTIONS.get(n, [])], *extra]


def assert_complete(path: Path, names) -> dict:
    metrics = json.loads((path / "metrics.json").read_text())
    assert metrics["status"] == "complete"
    assert json.loads((path / "status.json").read_text())["status"] == "complete"
    assert sorted(metrics["strategies"]) == sorted(names)
    assert list(metrics["stages"]) == ["pretrain", "adapt", "instruct"]
    for stage in metrics["stages"].values():
        assert stage["eval"]["perplexity"]["classes"] and stage["train"]["steps"] == 3
    return metrics


def refusal(cfg) -> str | None:
    """The plan's one-line refusal of this config, or None when the plan accepts it."""
    try:
        make_plan(cfg)
    except UserError as refused:
        return str(refused)
    return None


def run_or_refuse(names, languages, out) -> str | None:
    """The refusal (after checking that run refuses the same way, writing nothing), or None
    after a complete run."""
    cfg = load_config(overrides(names, languages, out))
    message = refusal(cfg)
    if message is not None:
        assert "\n" not in message and message
        with pytest.raises(UserError) as again:  # run refuses the same way, before writing anything
            adaptlang.run(cfg)
        assert str(again.value) == message
        assert not any(out.iterdir()) if out.exists() else True
        return message
    assert_complete(adaptlang.run(cfg), names)
    return None


PAIRS = list(itertools.combinations(NAMES, 2))
COMBINATIONS = PAIRS + used_combinations()

# The compositions of built-in strategies the plan refuses, exactly, each with its reason (a
# regular expression the one-line message must match); every other composition of built-ins
# must run. A composition that starts being refused, or stops being refused, fails here:
# update this table on purpose, with the reason in the commit.
_LWF_AFTER_VOCAB = (r"^strategies 'vocab' and 'lwf' cannot be combined this way: lwf keeps the model of stage "
                    r"'pretrain' and applies it in stage 'adapt', but vocab changes the vocabulary in stage 'adapt'")
REFUSED = {
    ("lwf", "vocab"): _LWF_AFTER_VOCAB,
    ("mlm", "xling"): r"^strategies 'mlm' and 'xling' conflict in stage 'instruct': both own data\.new_examples",
    ("af", "vocab", "lwf"): _LWF_AFTER_VOCAB,
}


def built_in(name: str) -> bool:
    return STRATEGIES.get(name).__module__.startswith("adaptlang.strategies.")


def pinned(names) -> bool:
    """Built-in strategies only: their outcome is pinned by REFUSED (a plugin's pairs may run or be refused)."""
    return all(built_in(n) for n in names)


@pytest.mark.parametrize("names", COMBINATIONS, ids="+".join)
def test_every_pair_runs_or_is_refused_in_the_plan(names, small_languages, tmp_path):
    message = run_or_refuse(names, small_languages, tmp_path / "runs")
    if pinned(names):
        if names in REFUSED:
            assert message is not None, f"{'+'.join(names)} is no longer refused: update REFUSED"
            assert re.search(REFUSED[names], message), message
        else:
            assert message is None, f"{'+'.join(names)} is now refused: {message}"


def test_the_refused_compositions_are_exactly_these(small_languages, tmp_path):
    """The plan alone (seconds): which compositions of built-ins are refused, and why."""
    refused = {names: refusal(load_config(overrides(names, small_languages, tmp_path / "runs")))
               for names in COMBINATIONS if pinned(names)}
    refused = {names: message for names, message in refused.items() if message is not None}
    assert sorted(refused) == sorted(REFUSED)
    for names, message in refused.items():
        assert re.search(REFUSED[names], message), message


def test_vocab_then_lwf_is_refused_with_what_to_do_instead(small_languages, tmp_path):
    cfg = load_config(overrides(("vocab", "lwf"), small_languages, tmp_path))
    with pytest.raises(UserError, match=r"lwf keeps the model of stage 'pretrain' and applies it in stage 'adapt', "
                                        r"but vocab changes the vocabulary in stage 'adapt'.*strategy.lwf.stages="):
        make_plan(cfg)
    # from the vocabulary change on, the teacher reads the same ids: it runs
    fixed = load_config(overrides(("vocab", "lwf"), small_languages, tmp_path, "strategy.lwf.stages=[adapt,instruct]"))
    assert_complete(adaptlang.run(fixed), ("vocab", "lwf"))


class _Crash(Strategy):
    """Kills the run at step 2 of the stage named in ``target`` (when armed)."""

    target: str | None = None

    def on_step_end(self, state) -> None:
        if _Crash.target == state.ctx.name and state.step == 2:
            raise KeyboardInterrupt("killed by the test")


_Crash.stages = ("pretrain", "adapt", "instruct")


@pytest.fixture
def crash_strategy():
    register_strategy("_crash")(_Crash)
    yield _Crash
    STRATEGIES.unregister("_crash")


def last_stage_of(name: str) -> str:
    stages = compose(name).items[0][1]
    return [s for s in ("pretrain", "adapt", "instruct") if s in stages][-1]


def final_weights(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path / "stages" / "instruct" / "model" / "model.safetensors"))


@pytest.mark.parametrize("name", NAMES)
def test_kill_and_resume_is_bit_exact_and_state_round_trips(name, small_languages, tmp_path, crash_strategy):
    names = (name, "_crash")
    extra = ["train.checkpoint_every=1"]
    reference = adaptlang.run(load_config(overrides(names, small_languages, tmp_path / "a", *extra)))
    _Crash.target = last_stage_of(name)
    try:
        with pytest.raises(KeyboardInterrupt):
            adaptlang.run(load_config(overrides(names, small_languages, tmp_path / "b", *extra)))
    finally:
        _Crash.target = None
    killed = next((tmp_path / "b").iterdir())
    assert json.loads((killed / "status.json").read_text())["status"] == "failed"
    if (killed / "metrics.json").is_file():  # stages finished before the kill: not taken for a finished run
        assert json.loads((killed / "metrics.json").read_text())["status"] == "failed"
    cfg = load_config([f"output_dir={killed.parent}", f"name={killed.name}"], base=killed / "config.yaml")
    resumed = adaptlang.pipeline.run(cfg, resume=True)
    a, b = assert_complete(reference, names), assert_complete(resumed, names)
    for stage in a["stages"]:
        assert a["stages"][stage]["train"]["final_loss"] == b["stages"][stage]["train"]["final_loss"], stage
        assert a["stages"][stage]["eval"] == b["stages"][stage]["eval"], stage
    wa, wb = final_weights(reference), final_weights(resumed)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    state_a = load_state(reference / "stages" / "instruct", "strategies")
    state_b = load_state(resumed / "stages" / "instruct", "strategies")
    assert_same(state_a, state_b)
    # the saved state round-trips through a fresh strategy
    fresh = compose(name, {name: small_options(name)}).items[0][0]
    fresh.load_state_dict(state_a[name])
    assert_same(fresh.state_dict(), state_a[name])
    # nothing a strategy wrapped is left in the saved models: each loads as plain transformers, all keys used
    from transformers import AutoModelForCausalLM

    for stage in ("pretrain", "adapt", "instruct"):
        model, info = AutoModelForCausalLM.from_pretrained(reference / "stages" / stage / "model",
                                                           output_loading_info=True)
        assert not info["missing_keys"] and not info["unexpected_keys"], (stage, info)


def small_options(name: str) -> dict:
    """SMALL_OPTIONS of one strategy as keyword options."""
    pairs = (item.split("=", 1) for item in SMALL_OPTIONS.get(name, []))
    return {key.rsplit(".", 1)[-1]: yaml.safe_load(value) for key, value in pairs}


def assert_same(a, b, where: str = "state") -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a.cpu(), b.cpu()), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(map(str, a)) == set(map(str, b)), where
        bb = {str(k): v for k, v in b.items()}
        for k, v in a.items():
            assert_same(v, bb[str(k)], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where
