"""Set-up order by declared phase (issue #26, part 2).

Strategies used to name the strategies they set up after (``after`` lists); now each declares a
``phase`` from adaptlang.strategy.PHASES and the composition sorts by phase, the user's order
within one. These tests pin that every pair of built-in strategies sets up in the order it did
with the ``after`` lists, except the pairs listed in CHANGED, each with the reason its change is
harmless or a fix.
"""
from __future__ import annotations

import itertools

import pytest

from adaptlang import UserError
from adaptlang.composition import compose, order_strategies
from adaptlang.strategy import DEFAULT_PHASE, PHASES, STRATEGIES, Strategy, load_plugins, phase_rank, \
    register_strategy

load_plugins()
BUILT_IN = ["af", "agem", "ewc", "lora", "lwf", "mlm", "replay", "si", "vocab", "xling"]

# The ``after`` lists of the built-in strategies before phases (main at 359196d).
OLD_AFTER = {
    "af": ("vocab",),
    "agem": ("xling", "mlm", "replay"),
    "ewc": ("xling", "mlm", "replay"),
    "lora": ("vocab", "lwf", "ewc", "si", "agem"),
    "lwf": ("xling", "mlm", "replay"),
    "mlm": (),
    "replay": ("xling", "mlm"),
    "si": ("xling", "mlm", "replay"),
    "vocab": ("lwf", "ewc", "si", "agem"),
    "xling": (),
}

# Today's set-up order of every ordered pair, computed with the old algorithm
# (composition.order_strategies at 359196d, a depth-first walk of the ``after`` lists) over all
# 90 ordered pairs of the ten built-ins: the pairs below ("given as a+b") were set up as b, a;
# every other pair was set up in the order given.
OLD_SWAPPED = {
    "af+vocab", "agem+mlm", "agem+replay", "agem+xling", "ewc+mlm", "ewc+replay", "ewc+xling", "lora+agem",
    "lora+ewc", "lora+lwf", "lora+si", "lora+vocab", "lwf+mlm", "lwf+replay", "lwf+xling", "replay+mlm",
    "replay+xling", "si+mlm", "si+replay", "si+xling", "vocab+agem", "vocab+ewc", "vocab+lwf", "vocab+si",
}


def old_order(a: str, b: str) -> list[str]:
    return [b, a] if f"{a}+{b}" in OLD_SWAPPED else [a, b]


_SETUP_MODEL_VS_DATA = ("every setup_model runs before any setup_data (adaptlang.stage_runner), so {m} (setup_model "
                        "and a stage-end merge of the model) and {d} (setup_data; replay's stage end keeps token "
                        "ids, not the model) touch disjoint things in either order; the examples are encoded "
                        "with the final tokenizer in both")
_AF_ONLY_STEPS = ("af acts only in on_step_end (the reset) and writes a note at the stage end; {o} has no "
                  "on_step_end, so the two never act at the same point")

# Pairs (given as a+b) that the phases set up in another order than the ``after`` lists did. Each
# was unconstrained before: no ``after`` between the two, so the user's order was kept and both
# orders ran; the phase now fixes one.
CHANGED = {
    **{f"af+{o}": _AF_ONLY_STEPS.format(o=o) for o in ("agem", "ewc", "lwf", "mlm", "replay", "xling", "lora")},
    "af+si": ("both act in on_step_end. SI adds grad * (theta after the step - theta before) to its path "
              "integral; with af first (given as af+si) the embedding reset was counted as a training step's "
              "displacement. Now SI reads the optimizer's own step, then af resets (as si+af always did): a fix"),
    **{f"{m}+{d}": _SETUP_MODEL_VS_DATA.format(m=m, d=d) for m in ("lora", "vocab") for d in ("mlm", "replay", "xling")},
}


# Built-ins added after the phases (no ``after`` list ever ordered them): where each sets up
# against every older built-in, and why.
NEWER = {
    "merge": {
        "before": ("xling", "mlm", "replay", "lwf", "ewc", "si", "agem"),
        "after": ("vocab", "lora", "af"),
        "why": ("merge copies the stage start in setup_model before vocab grows the rows and lora wraps the body, so "
                "its reference has plain names and the old rows; torn down in reverse, it merges after lora and vocab "
                "merged their adapters and rows (the model it merges is plain), and before the memory strategies "
                "(lwf, ewc, si, agem) take their copy at the stage end, so they remember the merged model that the "
                "next stage starts from. The example and mixture strategies only touch data"),
    },
}


def test_the_built_ins_are_the_ones_this_table_was_computed_for():
    # a new built-in: add its pairs' reasoning here (NEWER)
    assert STRATEGIES.names() == sorted(BUILT_IN + list(NEWER))


@pytest.mark.parametrize("new", list(NEWER))
def test_a_newer_built_in_sets_up_where_its_reason_says_in_either_given_order(new):
    assert set(NEWER[new]["before"]) | set(NEWER[new]["after"]) == set(BUILT_IN)
    for other in NEWER[new]["before"]:  # ``other`` sets up before ``new``
        assert order_strategies([new, other]) == order_strategies([other, new]) == [other, new]
    for other in NEWER[new]["after"]:
        assert order_strategies([new, other]) == order_strategies([other, new]) == [new, other]


def test_every_old_after_constraint_holds_by_phase():
    for name, deps in OLD_AFTER.items():
        for dep in deps:
            assert phase_rank(STRATEGIES.get(dep)) < phase_rank(STRATEGIES.get(name)), (dep, name)


@pytest.mark.parametrize("a,b", list(itertools.permutations(BUILT_IN, 2)))
def test_every_pair_sets_up_as_before_or_its_change_is_explained(a, b):
    new = order_strategies([a, b])
    if f"{a}+{b}" in CHANGED:
        assert new == [b, a] and old_order(a, b) == [a, b]
        assert old_order(b, a) == [b, a], "the old lists left this pair to the user's order"
    else:
        assert new == old_order(a, b)


def test_the_changed_pairs_share_no_hook_whose_order_matters_except_af_si():
    ordered_hooks = ("setup_model", "setup_data", "on_gradients", "on_step_end")

    def hooks(name):
        cls = STRATEGIES.get(name)
        return {h for h in ordered_hooks if getattr(cls, h) is not getattr(Strategy, h)}

    shared = {pair: hooks(pair.split("+")[0]) & hooks(pair.split("+")[1]) for pair in CHANGED}
    assert {p: s for p, s in shared.items() if s} == {"af+si": {"on_step_end"}}


def test_phases_of_the_built_ins():
    assert list(PHASES) == ["examples", "mixture", "memory", "merge", "vocabulary", "model", "embeddings"]
    phases = {n: STRATEGIES.get(n).phase for n in BUILT_IN}
    assert phases == {"xling": "examples", "mlm": "examples", "replay": "mixture", "lwf": "memory", "ewc": "memory",
                      "si": "memory", "agem": "memory", "vocab": "vocabulary", "lora": "model", "af": "embeddings"}
    assert STRATEGIES.get("merge").phase == "merge"


def test_phase_first_then_the_given_order_for_longer_compositions():
    assert order_strategies(["af", "lora", "vocab", "si", "ewc", "replay", "xling"]) == \
        ["xling", "replay", "si", "ewc", "vocab", "lora", "af"]
    assert compose("lora+vocab+replay").names == ["replay", "vocab", "lora"]


class _Plain(Strategy):
    pass


class _First(Strategy):
    phase = "examples"


@pytest.fixture
def plugins():
    register_strategy("_p_plain")(_Plain)
    register_strategy("_p_first")(_First)
    yield
    STRATEGIES.unregister("_p_plain")
    STRATEGIES.unregister("_p_first")


def test_a_plugin_without_a_phase_takes_the_default_and_keeps_the_given_order_within_it(plugins):
    assert _Plain.phase == DEFAULT_PHASE == "model"
    assert order_strategies(["_p_plain", "vocab", "lora", "af"]) == ["vocab", "_p_plain", "lora", "af"]
    assert order_strategies(["lora", "_p_plain"]) == ["lora", "_p_plain"]
    assert order_strategies(["_p_plain", "_p_first", "replay"]) == ["_p_first", "replay", "_p_plain"]


def test_an_unknown_phase_is_refused_listing_the_valid_ones():
    class _Odd(Strategy):
        phase = "late"

    with pytest.raises(UserError, match="phase='late'. Valid, in set-up order: examples, mixture, memory, "
                                        "merge, vocabulary, model, embeddings"):
        register_strategy("_p_odd")(_Odd)
    assert "_p_odd" not in STRATEGIES


def test_the_old_after_attribute_is_refused_not_silently_ignored():
    with pytest.raises(UserError, match="declares 'after': set-up order is now a phase"):
        class _Old(Strategy):
            after = ("vocab",)


def test_unregister_removes_a_name_and_tolerates_an_absent_one():
    class _Tmp(Strategy):
        pass

    register_strategy("_p_tmp")(_Tmp)
    assert STRATEGIES.unregister("_p_tmp") is _Tmp and "_p_tmp" not in STRATEGIES
    assert STRATEGIES.unregister("_p_tmp") is None
