import pytest
import yaml

from adaptlang import UserError, compose, load_config
from adaptlang.composition import order_strategies
from adaptlang.config import CONFIG_ROOT, GROUPS, group_options
from adaptlang.plan import make_plan
from adaptlang.strategy import STRATEGIES, Strategy, load_plugins, register_strategy

load_plugins()  # the registry is complete before parametrize reads it at collection time


def test_base_defaults_compose_af_replay():
    cfg = load_config([])
    assert list(cfg.strategy.keys()) == ["af", "replay"]
    assert cfg.strategy.af.stages == ["pretrain"] and cfg.strategy.replay.stages == ["instruct"]


@pytest.mark.parametrize("group", GROUPS)
def test_every_shipped_group_yaml_loads(group):
    options = group_options(group)
    assert options, f"no YAML in configs/{group}"
    for option in options:
        overrides = [f"{group}={option}"]
        if group == "model" and option == "pretrained":
            overrides.append("model.name_or_path=some/path")
        if group == "experiment" and option == "ia_paper":  # one stage: no pretrain stage for af
            overrides.append("strategy=xling+replay")
        if group == "experiment" and option == "ia_zeroshot":  # no instruct stage for replay: no strategy
            overrides.append("strategy=none")
        cfg = load_config(overrides)
        assert cfg[group] is not None


def test_every_yaml_file_is_valid_yaml():
    files = list(CONFIG_ROOT.rglob("*.yaml"))
    assert len(files) >= 8
    for path in files:
        assert isinstance(yaml.safe_load(path.read_text()), dict), path


def test_the_registry_is_complete_at_collection_time():
    assert {"af", "replay", "vocab", "xling", "mlm", "lora", "ewc", "lwf", "agem", "si"} <= set(STRATEGIES.names())


@pytest.mark.parametrize("name", sorted(STRATEGIES.names()))
def test_every_strategy_yaml_loads_and_plans(name):
    cfg = load_config([f"strategy={name}"])
    assert list(cfg.strategy.keys()) == [name]
    plan = make_plan(cfg)
    assert plan.strategy(name).stages == tuple(cfg.strategy[name].stages)


def test_strategy_options_under_their_own_key():
    cfg = load_config(["strategy=af+replay", "strategy.af.every=7", "strategy.replay.size=10"])
    assert cfg.strategy.af.every == 7 and cfg.strategy.replay.size == 10
    composed = compose(dict(cfg.strategy))
    assert composed.get("af").every == 7 and composed.get("replay").size == 10


@pytest.mark.parametrize("override, fragment", [
    (["strategy=nope"], "unknown strategy 'nope'. Valid: af, "),
    (["strategy=af+repaly"], "Did you mean 'replay'?"),
    (["trian.lr=1"], "Did you mean 'train'?"),
    (["train.lrr=1"], "Did you mean 'lr'?"),
    (["strategy.af.evry=3"], "Did you mean 'every'?"),
    (["strategy=af", "strategy.replay.size=3"], "strategy 'replay' is not active"),
    (["train.lr=fast"], "expected a number"),
    (["train.batch_size=1.5"], "expected an integer"),
    (["overwrite=3"], "expected bool"),
    (["model=gigantic"], "unknown model 'gigantic'"),
    (["strategy=af+af"], "appears twice"),
    (["strategy.af.stages=[nostage]"], "unknown stage 'nostage'"),
    (["seed"], "not of the form key=value"),
])
def test_bad_overrides_are_one_clear_error(override, fragment):
    with pytest.raises(UserError) as err:
        make_plan(load_config(override))
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


def test_values_are_never_evaluated():
    cfg = load_config(["name=__import__('os').system('false')"])
    assert cfg.name == "__import__('os').system('false')"


class _Mixer(Strategy):
    owns = frozenset({"data.mixture"})
    stages = ("instruct",)


class _Late(Strategy):
    phase = "embeddings"


class _Early(Strategy):
    phase = "examples"


@pytest.fixture
def test_strategies():
    for name, cls in (("_t_mixer", _Mixer), ("_t_late", _Late), ("_t_early", _Early)):
        register_strategy(name)(cls)
    yield
    for name in ("_t_mixer", "_t_late", "_t_early"):
        STRATEGIES.unregister(name)


def test_composition_orders_by_phase(test_strategies):
    assert order_strategies(["_t_late", "_t_early"]) == ["_t_early", "_t_late"]
    assert order_strategies(["_t_early", "_t_late"]) == ["_t_early", "_t_late"]
    assert order_strategies(["af", "replay"]) == ["replay", "af"]  # mixture before embeddings
    assert order_strategies(["si", "ewc"]) == ["si", "ewc"]  # one phase (memory): the given order
    assert order_strategies(["ewc", "si"]) == ["ewc", "si"]


def test_conflicting_strategies_are_refused_naming_both_and_the_stage(test_strategies):
    with pytest.raises(UserError, match=r"strategies 'replay' and '_t_mixer' conflict in stage 'instruct': both "
                                        r"own data.mixture"):
        make_plan(load_config(["strategy=replay+_t_mixer"]))
    # claims are per stage: acting in different stages is no conflict
    make_plan(load_config(["strategy=replay+_t_mixer", "strategy._t_mixer.stages=[adapt]"]))


def test_duplicate_registration_is_refused():
    with pytest.raises(ValueError, match="already registered"):
        register_strategy("af")(_Early)


def test_compose_from_python_string():
    composed = compose("af+replay", {"af": {"every": 3}, "replay": {"size": 8}})
    assert composed.names == ["replay", "af"]  # set-up order: phase "mixture" before "embeddings"
    assert composed.given == ["af", "replay"]  # the order written, which names the run (af+replay-s0)
    assert [s.name for s in composed.active("pretrain")] == ["af"]
    assert [s.name for s in composed.active("instruct")] == ["replay"]
    with pytest.raises(UserError, match="has no option .evry.. Did you mean .every."):
        compose("af", {"af": {"evry": 3}})
