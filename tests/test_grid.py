"""Experiment grids: sweep parsing and expansion, grid files, and one real grid of tiny runs
followed by its comparison report (whose tables must match the runs' metrics.json)."""
import json

import pytest

from adaptlang.compare_report import fmt
from adaptlang.config import load_config
from adaptlang.errors import UserError
from adaptlang.grid import expand, is_grid, load_grid, run_grid, split_sweep
from conftest import QUICK
from test_compare import make_run, md_table


@pytest.mark.parametrize("arg, expected", [
    ("seed=1,2,3", ("seed", ["1", "2", "3"])),
    ("strategy=xling+replay,mlm", ("strategy", ["xling+replay", "mlm"])),
    ("experiment=paper, default", ("experiment", ["paper", "default"])),
    ("seed=1", None),
    ("seed=[1,2]", None),                               # a list is a value, never a sweep
    ("strategy.xling.objectives=[word,span]", None),
    ("strategy.vocab.protect=en,fr", None),             # strategy/seed/groups and numeric strategy options
    ("strategy.merge.weight=0,0.25,1", ("strategy.merge.weight", ["0", "0.25", "1"])),
    ("train.lr=0.1,0.2", None),
    ("data.train_files.fr=a,b.txt", None),
    ("strategy='a,b'", None),                           # quoted: a value
])
def test_split_sweep(arg, expected):
    assert split_sweep(arg) == expected


def test_bad_sweeps_are_one_line_errors():
    with pytest.raises(UserError, match="empty item"):
        split_sweep("seed=1,,2")
    with pytest.raises(UserError, match="appears twice"):
        split_sweep("strategy=mlm,mlm")
    with pytest.raises(UserError, match="names two runs alike"):
        expand(["strategy=xling+replay,replay+xling"])  # composed to the same order
    with pytest.raises(UserError, match="unknown strategy 'mlmm'"):
        expand(["strategy=mlmm,af"])  # checked before anything runs


def test_cartesian_product_names_and_overrides():
    runs, settings = expand(["strategy=replay+xling,mlm", "seed=1,2,3", "strategy.replay.size=0"]
                            [:2] + ["train.lr=0.001"])
    assert [r.name for r in runs] == ["xling+replay-s1", "xling+replay-s2", "xling+replay-s3",
                                      "mlm-s1", "mlm-s2", "mlm-s3"]
    assert [r.label for r in runs[:3]] == ["xling+replay"] * 3
    cfg = load_config(runs[4].overrides)
    assert list(cfg.strategy) == ["mlm"] and cfg.seed == 2 and cfg.train.lr == 0.001 and cfg.name == "mlm-s2"
    assert settings == {"name": None, "baseline": None}
    assert is_grid(["seed=1,2"]) and is_grid(["grid=af_paper"]) and not is_grid(["seed=1", "x.y=[1,2]"])
    # a list value next to a sweep stays one value in every run
    runs, _ = expand(["strategy=xling", "seed=0,1", "strategy.xling.objectives=[word,span]"])
    assert [list(load_config(r.overrides).strategy.xling.objectives) for r in runs] == [["word", "span"]] * 2
    # other swept groups and a user name go into the run names
    runs, _ = expand(["name=exp", "strategy=af,mlm", "experiment=default,paper"])
    assert [r.name for r in runs] == ["exp-af-default-s0", "exp-af-paper-s0", "exp-mlm-default-s0",
                                      "exp-mlm-paper-s0"]


@pytest.mark.parametrize("grid, labels, baseline", [
    ("af_paper", ["Baseline", "BA", "AFA"], "Baseline"),
    ("ia_paper", ["zero-shot", "mlm", "ia-r0", "ia-r1000", "ia-r10000", "ia-denoising", "ia-translation",
                  "ia+monolingual"], "zero-shot"),
])
def test_shipped_grids_resolve(grid, labels, baseline):
    runs, settings = expand([f"grid={grid}", "seed=0,1"])
    assert settings == {"name": grid, "baseline": baseline}
    assert [r.name for r in runs] == [f"{label}-s{s}" for label in labels for s in (0, 1)]
    cfgs = {r.name: load_config(r.overrides) for r in runs}
    if grid == "af_paper":  # AF paper section 4: Baseline (no adaptation), BA, AFA
        assert [s.name for s in cfgs["Baseline-s0"].experiment.stages] == ["pretrain", "instruct"]
        assert not cfgs["Baseline-s0"].strategy and list(cfgs["BA-s1"].strategy) == ["vocab"]
        assert set(cfgs["AFA-s0"].strategy) == {"af", "vocab"}
    else:  # IA Table 4 (r) and Table 5 (objectives)
        assert [s.name for s in cfgs["zero-shot-s0"].experiment.stages] == ["pretrain", "tune"]
        assert [cfgs[f"ia-r{r}-s0"].strategy.replay.size for r in (0, 1000, 10000)] == [0, 1000, 10000]
        assert list(cfgs["ia-denoising-s1"].strategy.xling.objectives) == ["word", "span"]
        assert list(cfgs["ia-translation-s0"].strategy.xling.objectives) == ["sentence"]
        assert list(cfgs["ia+monolingual-s0"].strategy.xling.known) == ["en", "id"]
        assert list(cfgs["mlm-s0"].strategy) == ["mlm"] and cfgs["mlm-s0"].languages.classes.seen[0] == "ace"


def test_grid_file_errors(tmp_path):
    bad = tmp_path / "g.yaml"
    bad.write_text("runs: {a: [strategy=mlm]}\nbaseline: b\n")
    with pytest.raises(UserError, match="baseline 'b' is not a run label"):
        load_grid(str(bad))
    bad.write_text("runs: {a: [strategy=mlm]}\nseed: [1]\n")
    with pytest.raises(UserError, match="unknown key 'seed'. Did you mean 'seeds'"):
        load_grid(str(bad))
    with pytest.raises(UserError, match="unknown grid 'af_papr'. Did you mean 'af_paper'"):
        load_grid("af_papr")


def test_existing_run_with_another_config_is_refused_before_anything_runs(tmp_path):
    make_run(tmp_path, "mlm-s0", ["mlm"], 0, {"instruct": {"adapting": 1.0}})
    with pytest.raises(UserError, match="mlm-s0 already exists with a different config"):
        run_grid(["strategy=none,mlm", f"output_dir={tmp_path}", *QUICK])
    assert not (tmp_path / "none-s0").exists()


@pytest.mark.slow
def test_real_grid_then_report(tmp_path, capsys):
    """Two real tiny runs (strategy=none and mlm) through adaptlang.run, then the report."""
    langs = tmp_path / "langs.yaml"
    langs.write_text("classes:\n  pretraining: [en, es]\n  adapting: [fr, nl]\n  other: [de]\n")
    args = ["strategy=none,mlm", f"output_dir={tmp_path / 'runs'}", f"languages={langs}", *QUICK,
            "train.max_steps=2", "eval.max_sentences=2", "data.max_lines_per_language=40"]
    out = run_grid(args)
    assert out == tmp_path / "runs" / "compare-mlm_none"
    md = (out / "report.md").read_text()
    runs = {n: json.loads((tmp_path / "runs" / n / "metrics.json").read_text()) for n in ("none-s0", "mlm-s0")}
    comp = json.loads((out / "comparison.json").read_text())
    assert comp["baseline"] == "mlm"  # the mlm run is the default baseline
    for metric in ("ppl_token", "bits_per_char"):
        table = md_table(md, f"### perplexity · {metric}")
        for cls in ("pretraining", "adapting", "other", "overall"):
            for name, label in (("none-s0", "none"), ("mlm-s0", "mlm")):
                value = runs[name]["stages"]["instruct"]["eval"]["perplexity"]["classes"][cls][metric]
                assert table[label][cls].strip("*") == fmt(value)
                assert comp["tables"]["perplexity"][metric]["rows"][label][cls]["values"] == [value]
    # the hand-written runs of test_compare follow the same schema as real ones
    fake = json.loads((make_run(tmp_path, "fake-s0", ["mlm"], 0, {"instruct": {"adapting": 1.0}})
                       / "metrics.json").read_text())
    real = runs["mlm-s0"]
    assert set(fake) <= set(real) and set(fake["stages"]["instruct"]) <= set(real["stages"]["instruct"])
    assert set(fake["stages"]["instruct"]["train"]) == set(real["stages"]["instruct"]["train"])
    assert (set(fake["stages"]["instruct"]["eval"]["perplexity"]["classes"]["adapting"])
            == set(real["stages"]["instruct"]["eval"]["perplexity"]["classes"]["adapting"]))
    # the same command again reuses the complete runs (nothing retrained)
    before = (tmp_path / "runs" / "mlm-s0" / "metrics.json").stat().st_mtime_ns
    capsys.readouterr()
    run_grid(args)
    assert "mlm-s0: reuse" in capsys.readouterr().out
    assert (tmp_path / "runs" / "mlm-s0" / "metrics.json").stat().st_mtime_ns == before


def test_strategy_options_go_to_the_runs_where_the_strategy_is_active():
    runs, _ = expand(["grid=af_paper", "strategy.af.every=3", "train.lr=0.01"])
    cfgs = {r.name: load_config(r.overrides) for r in runs}
    assert cfgs["AFA-s0"].strategy.af.every == 3 and cfgs["AFA-s0"].name == "AFA-s0"
    assert "af" not in cfgs["BA-s0"].strategy and cfgs["BA-s0"].train.lr == 0.01
    with pytest.raises(UserError, match="strategy 'replay' is active in no run of the grid"):
        expand(["grid=af_paper", "strategy.replay.size=3"])


def test_a_numeric_strategy_option_is_swept_where_its_strategy_is_active(tmp_path):
    runs, _ = expand(["strategy=merge,replay", "strategy.merge.weight=0,0.5,1", "seed=0,1"])
    assert [r.name for r in runs] == ["merge-weight0-s0", "merge-weight0.5-s0", "merge-weight1-s0",
                                      "merge-weight0-s1", "merge-weight0.5-s1", "merge-weight1-s1",
                                      "replay-s0", "replay-s1"]
    cfgs = {r.name: load_config(r.overrides) for r in runs}
    assert cfgs["merge-weight0.5-s1"].strategy.merge.weight == 0.5 and cfgs["merge-weight0.5-s1"].seed == 1
    assert cfgs["merge-weight0.5-s1"].name == "merge-weight0.5-s1" and "merge" not in cfgs["replay-s0"].strategy
    grid = tmp_path / "g.yaml"
    grid.write_text("runs: {plain: [strategy=none], merged: [strategy=merge]}\n"
                    "sweep: {strategy.merge.weight: [0, 1]}\n")
    runs, _ = expand([f"grid={grid}"])
    assert [r.name for r in runs] == ["plain-s0", "merged-weight0-s0", "merged-weight1-s0"]
    assert [r.label for r in runs] == ["plain", "merged-weight0", "merged-weight1"]
    runs, _ = expand([f"grid={grid}", "strategy.merge.weight=0.25,0.75"])  # the command line's values win
    assert [r.name for r in runs][1:] == ["merged-weight0.25-s0", "merged-weight0.75-s0"]
    with pytest.raises(UserError, match="strategy 'merge' is active in no run of the grid"):
        expand(["strategy=none,replay", "strategy.merge.weight=0,1"])
    grid.write_text("runs: {merged: [strategy=merge]}\nsweep: {strategy.merge.weight: [0, 0]}\n")
    with pytest.raises(UserError, match="sweep.strategy.merge.weight: expected a strategy option"):
        load_grid(str(grid))


@pytest.mark.slow
def test_a_grid_over_merge_weights_draws_the_learning_forgetting_frontier(tmp_path):
    """Three tiny merge runs (weights 1, 0, 0.5 in the grid): one line, ordered by weight, in the
    frontier plot of report.html and the same points in comparison.json."""
    langs = tmp_path / "langs.yaml"
    langs.write_text("classes:\n  pretraining: [en, es]\n  adapting: [fr, nl]\n  other: [de]\n")
    grid = tmp_path / "frontier.yaml"
    grid.write_text("name: frontier\nruns: {merge: [strategy=merge]}\nsweep: {strategy.merge.weight: [1, 0, 0.5]}\n")
    out = run_grid([f"grid={grid}", f"output_dir={tmp_path / 'runs'}", f"languages={langs}", *QUICK,
                    "train.max_steps=2", "eval.max_sentences=2", "data.max_lines_per_language=40"])
    comp = json.loads((out / "comparison.json").read_text())
    merged = ["merge-weight0-s0", "merge-weight0.5-s0", "merge-weight1-s0"]
    assert comp["frontier"]["lines"] == [{"label": "merge (seed 0) over merge weight", "points": merged}]
    points = {p["run"]: p for p in comp["frontier"]["points"]}
    assert set(points) == set(merged)
    assert [points[n]["merge_weight"] for n in merged] == [0.0, 0.5, 1.0]
    for name, p in points.items():
        stages = json.loads((tmp_path / "runs" / name / "metrics.json").read_text())["stages"]
        bpc = {st: stages[st]["eval"]["perplexity"]["classes"] for st in (p["from"], p["to"])}
        assert p["learned"] == bpc[p["to"]]["adapting"]["bits_per_char"] - bpc[p["from"]]["adapting"]["bits_per_char"]
        assert p["kept"] == bpc[p["to"]]["pretraining"]["bits_per_char"] - bpc[p["from"]]["pretraining"]["bits_per_char"]
    html = (out / "report.html").read_text()
    assert "<h3>Learning-forgetting frontier</h3>" in html and 'alt="Learning-forgetting frontier' in html
    assert (out / "plots" / "frontier.png").stat().st_size > 1000
