"""The plan: one checked, printable object made before anything runs (issue #14)."""
import pytest
import yaml

from adaptlang import UserError, load_config
from adaptlang.cli import main as cli_main
from adaptlang.plan import make_plan

from conftest import QUICK


def test_the_plan_lists_stages_strategies_data_and_seeds():
    plan = make_plan(load_config(["strategy=af+replay", "strategy.af.every=7", *QUICK]))
    assert [s.name for s in plan.stages] == ["pretrain", "adapt", "instruct"]
    assert [s.strategies for s in plan.stages] == [("af",), (), ("replay",)]
    assert plan.stage("pretrain").steps == 3  # train.max_steps applied
    assert plan.strategy("af").options["every"] == 7 and plan.strategy("af").stages == ("pretrain",)
    assert plan.stage("adapt").train["lr"] == 1e-3  # the stage's own train override
    assert plan.stage("adapt").languages[:2] == ("ja", "fr")
    assert plan.name == "af+replay-s0" and plan.benchmarks == ["perplexity"]
    text = plan.describe()
    shown = yaml.safe_load(text)
    assert shown["stages"][0]["strategies"] == {"af": {"every": 7}}
    assert "new examples built by strategy" not in text  # no xling/mlm here
    xling = make_plan(load_config(["strategy=xling+replay", *QUICK]))
    assert "new examples built by strategy 'xling'" in xling.stage("instruct").data


def test_cli_config_prints_the_plan_and_the_resolved_config_reruns(tmp_path, capsys):
    assert cli_main(["config", "strategy=af+replay"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# adaptlang plan") and "set-up order" in out
    assert cli_main(["config", "--resolved", "strategy=af+replay", "strategy.af.every=9"]) == 0
    resolved = tmp_path / "config.yaml"
    resolved.write_text(capsys.readouterr().out)
    assert load_config([], base=resolved).strategy.af.every == 9


def test_a_refused_plan_is_one_line_from_config_and_run_and_writes_nothing(tmp_path, capsys):
    args = ["strategy=af+vocab", "experiment=paper", "strategy.af.stages=[pretrain,adapt]"]
    assert cli_main(["config", *args]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert cli_main(["run", *args, *QUICK, f"output_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert "conflict in stage 'adapt'" in err and err.count("\n") == 1
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("lwf_stages, ok", [("[pretrain,adapt,instruct]", False), ("[pretrain,instruct]", False),
                                            ("[adapt,instruct]", True), ("[instruct]", True), ("[pretrain]", True)])
def test_a_model_copy_never_crosses_a_vocabulary_change(lwf_stages, ok):
    cfg = load_config(["strategy=vocab+lwf", f"strategy.lwf.stages={lwf_stages}", *QUICK])
    if ok:
        make_plan(cfg)
    else:
        with pytest.raises(UserError, match="cannot read the new token ids"):
            make_plan(cfg)


def test_strategies_that_remember_parameters_accept_a_grown_vocabulary():
    for name in ("ewc", "si", "agem"):
        make_plan(load_config([f"strategy=vocab+{name}", *QUICK]))
