"""What the measured tables of docs/reproduce.md rely on: evaluation after chosen stages only
(eval.stages), and the (IA)1 stage alone continuing a shared prefix (experiment=ia_instruct)."""
from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file

from adaptlang import run
from adaptlang.config import load_config
from adaptlang.errors import UserError
from adaptlang.plan import make_plan
from conftest import QUICK

LANGS = "classes:\n  pretraining: [en, fr]\n  adapting: [nl, de]\n  other: [sv]\n"


@pytest.fixture(scope="module")
def small_set(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("langs") / "small.yaml"
    path.write_text(LANGS)
    return str(path)


def test_eval_stages_last_evaluates_only_the_last_stage(tmp_path, small_set):
    cfg = load_config([*QUICK, "strategy=none", f"languages={small_set}", f"output_dir={tmp_path}",
                       "eval.stages=last", "name=last"])
    metrics = json.loads((run(cfg) / "metrics.json").read_text())
    evaluated = {name: bool(stage["eval"]) for name, stage in metrics["stages"].items()}
    assert evaluated == {"pretrain": False, "adapt": False, "instruct": True}
    assert metrics["stages"]["instruct"]["eval"]["perplexity"]["classes"]["overall"]["ppl_token"] > 0


def test_eval_stages_names_are_checked_in_the_plan(small_set):
    plan = make_plan(load_config(["strategy=none", f"languages={small_set}", "eval.stages=[pretrain,instruct]"]))
    assert [s.name for s in plan.stages if plan.evaluates(s.name)] == ["pretrain", "instruct"]
    assert plan.to_dict()["evaluation after each stage"]["stages"] == ["pretrain", "instruct"]
    with pytest.raises(UserError, match="eval.stages: unknown stage 'instrukt'.*Did you mean 'instruct'"):
        make_plan(load_config(["strategy=none", f"languages={small_set}", "eval.stages=[instrukt]"]))


@pytest.mark.slow
def test_ia_instruct_from_a_shared_prefix_equals_the_full_run(tmp_path):
    """The tiny IA tables train pretrain + tune once per seed: the (IA)1 stage started from that
    run's tune model must be the same stage as at the end of a full experiment=ia run."""
    common = [*(o for o in QUICK if not o.startswith("model.")), "languages=nusax", "eval.benchmarks=[perplexity]", "eval.stages=last", f"output_dir={tmp_path}",
              "strategy=xling+replay", "strategy.xling.known=[en,id]", "strategy.replay.size=20"]
    model = [o for o in QUICK if o.startswith("model.")]
    full = run(load_config(["experiment=ia", *common, *model, "name=full"]))
    shared = run(load_config(["experiment=ia_instruct", "model=pretrained", "eval.base=false",
                              f"model.name_or_path={full / 'stages' / 'tune' / 'model'}", *common, "name=shared"]))
    a = load_file(full / "stages" / "instruct" / "model" / "model.safetensors")
    b = load_file(shared / "stages" / "instruct" / "model" / "model.safetensors")
    assert sorted(a) == sorted(b) and all(a[k].equal(b[k]) for k in a)
    figures = [json.loads((p / "metrics.json").read_text())["stages"]["instruct"]["eval"] for p in (full, shared)]
    assert figures[0] == figures[1]


@pytest.mark.parametrize("experiment, stages", [("paper", ["pretrain", "adapt", "instruct"]),
                                                ("paper_baseline", ["pretrain", "instruct"])])
def test_paper_experiments_take_the_papers_data_at_mistral_400m(experiment, stages):
    """AF paper section 4 and Limitations: Wikipedia 20231101, 10B pretraining tokens, OpenOrca."""
    from adaptlang.plan import stage_steps

    cfg = load_config([f"experiment={experiment}", "model=mistral-400m", "strategy=none"])
    assert [s.name for s in cfg.experiment.stages] == stages and "at_model" not in cfg.experiment
    pretrain, instruct = cfg.experiment.stages[0], cfg.experiment.stages[-1]
    assert pretrain.tokens == "10B" and stage_steps(cfg, pretrain) == 38147  # 10e9 / (32 x 8 x 1024)
    assert list(instruct.data.sources) == ["openorca"] and instruct.steps == 11368  # 2.91M / 256
    assert cfg.data.instructions.openorca.path == "hub:Open-Orca/OpenOrca"
    assert len(cfg.data.train_files) == 26 and cfg.data.train_files.se == "hub:wikimedia/wikipedia:20231101.se"
    tiny = load_config([f"experiment={experiment}", "strategy=none"])  # any other model: the tiny stages
    assert [s.steps for s in tiny.experiment.stages][0] == 300 and not tiny.data.train_files
