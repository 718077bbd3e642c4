"""Comparison reports from saved runs: the tables must show the runs' own numbers.

Runs here are hand-written run directories in the metrics.json schema (adaptlang.metrics/1);
tests/test_grid.py builds a report from real runs and checks that this schema still matches.
"""
import base64
import json
import math
import re
import statistics

import pytest
import yaml

from adaptlang.cli import main
from adaptlang.compare import build, compare
from adaptlang.errors import UserError

CLASSES = ("pretraining", "adapting", "other")
STAGES = ("pretrain", "adapt", "instruct")


def perplexity_result(rng_values: dict) -> dict:
    """A perplexity result: per class figures (and overall = their mean)."""
    classes = {c: {"ppl_token": v, "bits_per_char": v / 10, "ppl_char": v * 3, "bits_per_byte": v / 20,
                   "n_languages": 2} for c, v in rng_values.items()}
    overall = sum(rng_values.values()) / len(rng_values)
    classes["overall"] = {"ppl_token": overall, "bits_per_char": overall / 10, "ppl_char": overall * 3,
                          "bits_per_byte": overall / 20, "n_languages": 6}
    return {"languages": {}, "classes": classes, "skipped": {}}


def make_run(root, name, strategies, seed, values_by_stage, extra_eval=None, config_extra=None):
    """values_by_stage: stage -> class -> ppl_token."""
    path = root / name
    path.mkdir(parents=True)
    stages = {}
    for stage, values in values_by_stage.items():
        ev = {"perplexity": perplexity_result(values)}
        if extra_eval and stage in extra_eval:
            ev.update(extra_eval[stage])
        stages[stage] = {"strategies": [s for s in strategies if stage == "instruct"],
                         "train": {"steps": 5, "examples": 20, "tokens": 640, "loss_tokens": 600, "seconds": 0.5,
                                   "tokens_per_second": 1280.0, "data_seconds": 0.01, "strategy_seconds": 0.0, "packing": "padding",
                                   "first_loss": 7.0, "final_loss": 6.5, "lr_by_step": [[1, 0.001], [5, 0.0]]},
                         "setup_seconds": 0.2, "strategy_notes": {}, "parameters": {"total": 1000, "trainable": 1000},
                         "eval": ev, "eval_seconds": 0.1, "model_dir": f"stages/{stage}/model"}
    metrics = {"schema": "adaptlang.metrics/1", "run": name, "status": "complete", "strategies": strategies,
               "seed": seed, "environment": {"adaptlang": "0.1.0", "torch": "2.13.0"},
               "model": {"source": "built from config", "parameters": {"total": 1000, "trainable": 1000},
                         "vocab_size": 500},
               "stages": stages, "seconds": 3.0}
    (path / "metrics.json").write_text(json.dumps(metrics))
    config = {"name": None, "output_dir": str(root), "seed": seed, "model": {"hidden_size": 32},
              "strategy": {s: {"stages": ["instruct"]} for s in strategies}, "train": {"lr": 0.001}}
    config.update(config_extra or {})
    (path / "config.yaml").write_text(yaml.safe_dump(config))
    return path


def values(base, seed, shift):
    """Distinct, seed-dependent values per stage and class."""
    return {stage: {c: base + 10 * i + 3 * j + seed * 1.7 + shift for j, c in enumerate(CLASSES)}
            for i, stage in enumerate(STAGES)}


@pytest.fixture
def runs(tmp_path):
    made = {}
    for seed in (1, 2, 3):
        made[f"mlm-s{seed}"] = make_run(tmp_path, f"mlm-s{seed}", ["mlm"], seed, values(100, seed, 0))
        made[f"xling+replay-s{seed}"] = make_run(tmp_path, f"xling+replay-s{seed}", ["xling", "replay"], seed,
                                                 values(100, seed, -5 + seed * 0.3))
    made["af-s1"] = make_run(tmp_path, "af-s1", ["af"], 1, values(100, 1, 2.5))
    return made


def metric(path, stage, cls, name="ppl_token", bench="perplexity"):
    m = json.loads((path / "metrics.json").read_text())
    return m["stages"][stage]["eval"][bench]["classes"][cls][name]


def parse_cell(cell: str) -> tuple[float, float | None]:
    cell = cell.strip().strip("*").replace("−", "-")
    mean, _, std = cell.partition(" ± ")
    return float(mean), float(std) if std else None


def parse_delta(cell: str) -> tuple[float, float, float | None]:
    """A perplexity's Δ cell, ``−3.57% (−4.400 ± 0.300)``: (percent, delta, std)."""
    m = re.fullmatch(r"([+−-][0-9.]+)% \((.+)\)", cell.strip())
    assert m, cell
    delta, std = parse_cell(m.group(2))
    return float(m.group(1).replace("−", "-")), delta, std


def md_table(text: str, heading: str) -> dict[str, dict[str, str]]:
    """The Markdown table right after ``heading`` (or a line starting with it): row label -> column -> cell."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(heading))
    rows = []
    for line in lines[start + 1:]:
        if line.startswith("|"):
            rows.append([c.strip() for c in line.strip("|").split(" | ")])
        elif rows:
            break
    header, body = rows[0], rows[2:]
    return {r[0]: dict(zip(header, r)) for r in body}


def close(shown: float, exact: float) -> bool:
    """A shown (rounded) number equals the exact one to the shown precision."""
    return abs(shown - exact) <= max(abs(exact) * 1e-3, 6e-3)


def test_tables_match_the_runs_metrics_and_seed_statistics(runs, tmp_path):
    out = compare([runs[n] for n in sorted(runs)], out=tmp_path / "cmp", plots=False)
    md = (out / "report.md").read_text()
    comp = json.loads((out / "comparison.json").read_text())
    assert comp["baseline"] == "mlm"  # default: the mlm run
    assert set(comp["methods"]) == {"mlm", "xling+replay", "af"}
    assert comp["methods"]["xling+replay"]["seeds"] == [1, 2, 3]

    table = md_table(md, "### perplexity · ppl_token")
    deltas = md_table(md, "Δ ppl_token vs `mlm`")
    for cls in (*CLASSES, "overall"):
        for method in ("mlm", "xling+replay"):
            vals = [metric(runs[f"{method}-s{s}"], "instruct", cls) for s in (1, 2, 3)]
            mean, std = parse_cell(table[method][cls])
            assert close(mean, statistics.mean(vals)) and close(std, statistics.stdev(vals))
            cell = comp["tables"]["perplexity"]["ppl_token"]["rows"][method][cls]
            assert cell["values"] == vals and cell["mean"] == pytest.approx(statistics.mean(vals))
        # xling+replay vs mlm: same seeds, so the deltas are paired per seed
        diffs = [metric(runs[f"xling+replay-s{s}"], "instruct", cls) - metric(runs[f"mlm-s{s}"], "instruct", cls)
                 for s in (1, 2, 3)]
        pct, d, dstd = parse_delta(deltas["xling+replay"][cls])
        assert close(d, statistics.mean(diffs)) and close(dstd, statistics.stdev(diffs))
        base_vals = [metric(runs[f"mlm-s{s}"], "instruct", cls) for s in (1, 2, 3)]
        # a perplexity's change also as the relative change of the mean, in percent
        assert close(pct, 100 * statistics.mean(diffs) / statistics.mean(base_vals))
        assert deltas["xling+replay"][cls].startswith("−")  # lower than mlm: shown with its sign
        # af: one seed, not the baseline's seeds: difference of the means, no ±
        af = metric(runs["af-s1"], "instruct", cls)
        base = statistics.mean(metric(runs[f"mlm-s{s}"], "instruct", cls) for s in (1, 2, 3))
        assert parse_cell(table["af"][cls]) == (pytest.approx(af, abs=6e-3), None)
        _, shown, _ = parse_delta(deltas["af"][cls])
        assert close(shown, af - base)
        # lower is better for perplexity: the lowest mean is bold
        best = min(("mlm", "xling+replay", "af"), key=lambda m: parse_cell(table[m][cls])[0])
        assert table[best][cls].startswith("**") and sum(table[m][cls].startswith("**") for m in table) == 1
    # every perplexity metric has its table, bits per character included
    bpc = md_table(md, "### perplexity · bits_per_char")
    assert close(parse_cell(bpc["af"]["adapting"])[0], metric(runs["af-s1"], "instruct", "adapting", "bits_per_char"))
    # bits per character is not a perplexity: its Δ is the plain difference
    bpc_delta = md_table(md, "Δ bits_per_char vs `mlm`")["af"]["adapting"]
    assert "%" not in bpc_delta and close(parse_cell(bpc_delta)[0], metric(runs["af-s1"], "instruct", "adapting",
                                                                                "bits_per_char") - statistics.mean(
        metric(runs[f"mlm-s{s}"], "instruct", "adapting", "bits_per_char") for s in (1, 2, 3)))


def test_generic_benchmarks_directions_and_class_columns(tmp_path):
    """Any benchmark of the {languages, classes, skipped} shape is tabulated; accuracy is
    higher-is-better, an unknown metric has no direction (no bold)."""
    def nusax(acc):
        return {"nusax": {"languages": {}, "skipped": {},
                          "classes": {"pretraining": {"accuracy": acc, "weighted_f1": acc - 0.1, "n_languages": 2},
                                      "seen": {"accuracy": acc + 0.05, "weighted_f1": acc, "n_languages": 7},
                                      "overall": {"accuracy": acc + 0.01, "weighted_f1": acc - 0.05,
                                                  "n_languages": 12}}},
                "mystery": {"languages": {}, "skipped": {}, "classes": {"overall": {"score": acc * 2}}}}

    a = make_run(tmp_path, "zero-s0", [], 0, values(50, 0, 0), {"instruct": nusax(0.40)})
    b = make_run(tmp_path, "ia-s0", ["xling"], 0, values(50, 0, 1), {"instruct": nusax(0.55)})
    out = compare([b, a], baseline=a, out=tmp_path / "cmp", plots=False)
    md = (out / "report.md").read_text()
    comp = json.loads((out / "comparison.json").read_text())
    assert comp["baseline"] == "zero" and list(comp["methods"]) == ["zero", "ia"]
    acc = md_table(md, "### nusax · accuracy (higher is better)")
    assert list(acc["ia"])[2:] == ["pretraining", "seen", "overall"]
    assert acc["ia"]["seen"] == "**0.600**" and acc["zero"]["seen"] == "0.450"
    assert md_table(md, "Δ accuracy vs `zero`")["ia"]["pretraining"] == "+0.150"
    mystery = md_table(md, "### mystery · score (no known direction)")
    assert mystery["ia"]["overall"] == "1.100" and "**" not in md.split("### mystery")[1].split("##")[0]
    html = (out / "report.html").read_text()
    assert 'class="num better">+0.150' in html  # higher accuracy than the baseline: better


def test_html_is_self_contained_with_inline_pngs(runs, tmp_path):
    out = compare([runs["mlm-s1"], runs["mlm-s2"], runs["xling+replay-s1"], runs["xling+replay-s2"]],
                  out=tmp_path / "cmp")
    html = (out / "report.html").read_text()
    images = re.findall(r'<img [^>]*src="([^"]+)"', html)
    # ppl_token and bits_per_char: delta bars + stage lines each; the learning-forgetting frontier
    assert len(images) == 5
    for src in images:
        assert src.startswith("data:image/png;base64,")
        png = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 2000
    assert not re.search(r'(src|href)="(https?:|//|plots/)', html) and "<script" not in html
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    # the Markdown report links the same plots as files next to it
    for rel in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", (out / "report.md").read_text()):
        assert (out / rel).read_bytes()[:4] == b"\x89PNG"


def test_report_states_what_was_compared_and_how_to_rerun(runs, tmp_path):
    out = compare([runs["mlm-s1"], runs["af-s1"]], out=tmp_path / "cmp", plots=False)
    md = (out / "report.md").read_text()
    setup = md_table(md, "### Runs")
    assert setup["mlm (baseline)"]["parameters at stage (total / trainable)"] == "1,000 / 1,000"
    assert setup["af"]["steps per stage"] == "pretrain 5, adapt 5, instruct 5"
    assert setup["af"]["stage compared"] == "instruct" and setup["af"]["seed"] == "1"
    diff = md_table(md, "### Config differences")
    assert diff["strategy"]["mlm"] == "mlm" and diff["strategy"]["af"] == "af"
    assert "Environment (all runs): adaptlang 0.1.0, torch 2.13.0" in md
    assert f"adaptlang run --config {runs['af-s1'] / 'config.yaml'} output_dir=rerun name=af-s1" in md
    assert f"--baseline {runs['mlm-s1']} --out {out}" in md


def test_stage_option_and_stage_lines(runs, tmp_path):
    comp = build([runs["mlm-s1"], runs["af-s1"]], stage="adapt")
    cell = comp["tables"]["perplexity"]["ppl_token"]["rows"]["af"]["other"]
    assert cell["mean"] == metric(runs["af-s1"], "adapt", "other")
    lines = comp["by_stage"]["perplexity"]["ppl_token"]["af"]["pretraining"]
    assert {s: v["mean"] for s, v in lines.items()} == {s: metric(runs["af-s1"], s, "pretraining") for s in STAGES}
    with pytest.raises(UserError, match="no evaluated stage 'adpat'. Did you mean 'adapt'"):
        build([runs["mlm-s1"]], stage="adpat")


def test_same_config_different_seed_is_one_method(tmp_path):
    a = make_run(tmp_path, "x-s0", ["af"], 0, values(10, 0, 0))
    b = make_run(tmp_path, "x-s1", ["af"], 1, values(10, 1, 0))
    c = make_run(tmp_path, "x-lr-s0", ["af"], 0, values(10, 0, 1), config_extra={"train": {"lr": 0.01}})
    comp = build([a, b, c])
    assert {k: v["seeds"] for k, v in comp["methods"].items()} == {"x": [0, 1], "x-lr": [0]}
    assert comp["config_differences"] == {"train.lr": {"x": 0.001, "x-lr": 0.01}}


def test_cli_compare_and_its_errors(runs, tmp_path, capsys):
    assert main(["compare", str(runs["af-s1"]), str(runs["mlm-s2"]), "--baseline", str(runs["af-s1"]),
                 "--out", str(tmp_path / "c")]) == 0
    assert json.loads((tmp_path / "c" / "comparison.json").read_text())["baseline"] == "af"
    assert main(["compare", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"adaptlang: error: {tmp_path / 'nope'}: not a run directory (no metrics.json); "
                   "a run directory is runs/<name>/"]


def test_unfinished_runs_and_different_stages_are_warned_of(tmp_path, capsys):
    done = make_run(tmp_path, "mlm-s0", ["mlm"], 0, values(10, 0, 0))
    cut = make_run(tmp_path, "af-s0", ["af"], 0, {s: values(10, 0, 1)[s] for s in ("pretrain", "adapt")})
    m = json.loads((cut / "metrics.json").read_text())
    (cut / "metrics.json").write_text(json.dumps({**m, "status": "failed"}))
    other = make_run(tmp_path, "lwf-s0", ["lwf"], 0, values(10, 0, 2))
    assert main(["compare", str(done), str(cut), str(other), "--out", str(tmp_path / "c")]) == 0
    err = capsys.readouterr().err
    assert "adaptlang: warning: run af-s0 is not complete (status: failed)" in err
    assert "compared at different stages (adapt, instruct): pass --stage" in err
    assert "**Warning:** run af-s0 is not complete" in (tmp_path / "c" / "report.md").read_text()
    assert "<b>Warning:</b> the runs are compared at different stages" in (tmp_path / "c" / "report.html").read_text()
    assert build([done, cut], stage="adapt")["warnings"] == [
        "run af-s0 is not complete (status: failed); its figures are those of stage 'adapt'"]
    assert build([done])["warnings"] == []
    zero_shot = make_run(tmp_path, "zs-s0", [], 0, {"tune": values(10, 0, 3)["instruct"]})
    assert build([zero_shot, other], baseline=zero_shot)["warnings"] == []  # a baseline may end elsewhere
    (tmp_path / "afile").write_text("x")
    assert main(["compare", str(done), "--out", str(tmp_path / "afile")]) == 2
    assert "a file is in the way" in capsys.readouterr().err


def test_stage_order_and_tokenizer_note(tmp_path):
    """A method without the adapt stage (AF paper's Baseline) keeps the stage order of the
    others; a vocabulary expansion marks the per-token table as not comparable."""
    from adaptlang.compare_common import merge_orders

    assert merge_orders([["pretrain", "instruct"], ["pretrain", "adapt", "instruct"]]) == \
        ["pretrain", "adapt", "instruct"]
    base = make_run(tmp_path, "Baseline-s0", [], 0, {s: values(10, 0, 0)[s] for s in ("pretrain", "instruct")})
    ba = make_run(tmp_path, "BA-s0", ["vocab"], 0, values(10, 0, 1))
    m = json.loads((ba / "metrics.json").read_text())
    m["stages"]["adapt"]["strategy_notes"]["vocab"] = {"vocab_size_after": 700}
    (ba / "metrics.json").write_text(json.dumps(m))
    out = compare([base, ba], out=tmp_path / "cmp")
    comp = json.loads((out / "comparison.json").read_text())
    assert list(comp["by_stage"]["perplexity"]["ppl_token"]["Baseline"]["other"]) == ["pretrain", "instruct"]
    assert [r["vocab_size"] for info in comp["methods"].values() for r in info["runs"]] == [500, 700]
    md = (out / "report.md").read_text()
    ppl = md.split("### perplexity · ppl_token")[1].split("###")[0]
    bpc = md.split("### perplexity · bits_per_char")[1].split("###")[0]
    assert "not comparable across tokenizers" in ppl and "not comparable" not in bpc


def test_vocabulary_size_from_the_stage_then_older_run_folders(tmp_path):
    """The compared vocabulary size is the stage's generic ``vocab_size``; run folders
    written before stages carried it fall back to the vocab note, then to the model's."""
    new = make_run(tmp_path, "new-s0", ["vocab"], 0, values(10, 0, 0))
    m = json.loads((new / "metrics.json").read_text())
    m["stages"]["adapt"]["vocab_size"] = 900
    m["stages"]["adapt"]["strategy_notes"]["vocab"] = {"vocab_size_after": 700}  # the stage's own figure wins
    m["stages"]["instruct"]["vocab_size"] = 900
    (new / "metrics.json").write_text(json.dumps(m))
    old = make_run(tmp_path, "old-s0", ["vocab"], 0, values(10, 0, 1), config_extra={"train": {"lr": 0.01}})
    m = json.loads((old / "metrics.json").read_text())
    m["stages"]["adapt"]["strategy_notes"]["vocab"] = {"vocab_size_after": 700}
    (old / "metrics.json").write_text(json.dumps(m))
    plain = make_run(tmp_path, "plain-s0", [], 0, values(10, 0, 2), config_extra={"train": {"lr": 0.1}})
    comp = build([new, old, plain], baseline=plain)
    sizes = {label: info["runs"][0]["vocab_size"] for label, info in comp["methods"].items()}
    assert sizes == {"plain": 500, "new": 900, "old": 700}
    assert build([new], stage="pretrain")["methods"]["new"]["runs"][0]["vocab_size"] == 500


# A number a reader cannot use: exponent notation, or seven and more digits in a row.
UNREADABLE = re.compile(r"\d[eE][+-]?\d|\d{7,}")


def table_cells(text: str) -> list[str]:
    """Every cell of every Markdown table in ``text`` (thousands separators removed)."""
    return [c.strip().replace(",", "") for line in text.splitlines() if line.startswith("|")
            for c in line.strip("|").split(" | ")]


def huge_run(root, name, strategies, seed, ppl_char: float, ppl_token: float, config_extra=None):
    """A run whose per-character perplexity is enormous (an untrained model: ~1e11)."""
    path = make_run(root, name, strategies, seed, values(100, seed, 0), config_extra=config_extra)
    m = json.loads((path / "metrics.json").read_text())
    for i, st in enumerate(m["stages"].values()):
        for j, fig in enumerate(st["eval"]["perplexity"]["classes"].values()):
            fig["ppl_char"] = ppl_char * (1 + 0.1 * i + 0.01 * j)
            fig["ppl_token"] = ppl_token * (1 + 0.1 * i + 0.01 * j)
    (path / "metrics.json").write_text(json.dumps(m))
    return path


def test_enormous_perplexities_are_shown_readably(tmp_path):
    """ppl_char around 2.4e11 and ppl_token around 3e5: the tables show log-ppl and relative
    changes, never an exponent or a twelve-digit number; comparison.json keeps the raw values."""
    base = huge_run(tmp_path, "base-s0", ["mlm"], 0, 2.4e11, 3.0e5)
    other = huge_run(tmp_path, "other-s0", ["af"], 0, 3.0e10, 1.5e5, config_extra={"train": {"lr": 0.01}})
    out = compare([base, other], baseline=base, out=tmp_path / "cmp")
    md = (out / "report.md").read_text()
    results = md.split("## What was compared")[0]
    bad = [c for c in table_cells(results) if UNREADABLE.search(c)]
    assert not bad, bad
    html = (out / "report.html").read_text()
    bad = [c for c in re.findall(r"<td[^>]*>([^<]*)</td>", html.split("<h2>What was compared")[0])
           if UNREADABLE.search(c.replace(",", ""))]
    assert not bad, bad
    comp = json.loads((out / "comparison.json").read_text())
    cell = comp["tables"]["perplexity"]["ppl_char"]["rows"]["other"]["other"]
    assert cell["values"] == [metric(other, "instruct", "other", "ppl_char")]  # raw numbers kept
    # log-ppl: ln of the value, and the relative change of the perplexity (hand-computed)
    shown = md_table(md, "### perplexity · ppl_char")
    b, o = 2.4e11 * 1.22, 3.0e10 * 1.22  # instruct (i=2), class "other" (j=2)
    assert shown["other"]["other"] == f"**{math.log(o):.2f}**" and shown["base"]["other"] == f"{math.log(b):.2f}"
    assert "log-ppl = ln(ppl_char)" in md.split("### perplexity · ppl_char")[1].split("###")[0]
    delta = md_table(md, "Δ ppl_char vs `base`")["other"]["other"]
    assert delta == f"−87.5% (Δ log-ppl −{abs(math.log(o / b)):.2f})"
    assert cell["delta_rel"] == pytest.approx(-0.875) and cell["delta_log"] == pytest.approx(math.log(0.125))


def test_relative_change_of_a_small_perplexity_by_hand(tmp_path):
    """ppl_token 200 -> 150 is −25%, shown with the raw difference beside it."""
    a = make_run(tmp_path, "a-s0", ["mlm"], 0, {"instruct": {"adapting": 200.0}})
    b = make_run(tmp_path, "b-s0", ["af"], 0, {"instruct": {"adapting": 150.0}}, config_extra={"train": {"lr": 0.5}})
    out = compare([a, b], baseline=a, out=tmp_path / "cmp", plots=False)
    md = (out / "report.md").read_text()
    assert md_table(md, "### perplexity · ppl_token")["b"]["adapting"] == "**150.00**"
    assert md_table(md, "Δ ppl_token vs `a`")["b"]["adapting"] == "−25.0% (−50.000)"
    # ppl_char = 3 x ppl_token here: 600 -> 450, also −25%
    assert md_table(md, "Δ ppl_char vs `a`")["b"]["adapting"] == "−25.0% (−150.00)"


def test_learning_forgetting_frontier_one_point_per_run_and_a_line_over_merge_weights(tmp_path):
    """x = Δ bits/char on adapting, y = Δ on pretraining, from stage base when a run has one
    (else its first stage) to the compared stage; a grid over strategy.merge.weight is a line."""
    runs = []
    for w in (0.0, 0.5, 1.0):
        vals = {"base": {"pretraining": 100, "adapting": 300, "other": 200}, **values(100, 1, -20 * w)}
        runs.append(make_run(tmp_path, f"merge+replay-{w:g}-s1", ["replay", "merge"], 1, vals,
                             config_extra={"strategy": {"replay": {"size": 16}, "merge": {"weight": w}}}))
    runs.append(make_run(tmp_path, "mlm-s1", ["mlm"], 1, values(100, 1, 0)))
    compare(runs, baseline=runs[-1], out=tmp_path / "cmp")
    f = json.loads((tmp_path / "cmp" / "comparison.json").read_text())["frontier"]
    assert (f["metric"], f["learned"], f["kept"]) == ("bits_per_char", "adapting", "pretraining")
    points = {p["run"]: p for p in f["points"]}
    assert len(points) == 4
    for w, path in zip((0.0, 0.5, 1.0), runs):
        p = points[path.name]
        assert (p["from"], p["to"], p["merge_weight"]) == ("base", "instruct", w)
        assert p["learned"] == pytest.approx(metric(path, "instruct", "adapting", "bits_per_char") - 30.0)
        assert p["kept"] == pytest.approx(metric(path, "instruct", "pretraining", "bits_per_char") - 10.0)
    plain = points["mlm-s1"]  # no base stage: from its first stage
    assert (plain["from"], plain["merge_weight"]) == ("pretrain", None)
    assert plain["kept"] == pytest.approx(metric(runs[-1], "instruct", "pretraining", "bits_per_char")
                                          - metric(runs[-1], "pretrain", "pretraining", "bits_per_char"))
    assert f["lines"] == [{"label": "replay+merge (seed 1) over merge weight", "points": [r.name for r in runs[:3]]}]
    assert f == build(runs, baseline=runs[-1])["frontier"]
    md = (tmp_path / "cmp" / "report.md").read_text()
    assert "### Learning-forgetting frontier" in md and "plots/frontier.png" in md
    row = md_table(md, "### Learning-forgetting frontier")
    assert row["merge+replay-0.5-s1"]["merge weight"] == "0.5"
    assert (tmp_path / "cmp" / "plots" / "frontier.png").stat().st_size > 1000
    html = (tmp_path / "cmp" / "report.html").read_text()
    assert "Learning-forgetting frontier" in html and 'alt="Learning-forgetting frontier' in html


def test_runs_from_their_seeds_own_models_are_one_method(tmp_path):
    """`adaptlang eval --run` of each seed's model (or a stage started from each seed's earlier
    run): the model paths differ only in the run folder's -s<seed>, so the seeds are one method."""
    runs = [make_run(tmp_path, f"AFA-s{s}", [], s, values(10, s, 0),
                     config_extra={"model": {"name_or_path": f"/runs/af/AFA-s{s}/stages/instruct/model"}})
            for s in (0, 1, 12)]
    runs.append(make_run(tmp_path, "BA-s1", [], 1, values(10, 1, 1),
                         config_extra={"model": {"name_or_path": "/runs/af/BA-s1/stages/instruct/model"}}))
    windows = [make_run(tmp_path, f"AFA-s{s}", [], s, values(10, s, 0),
                        config_extra={"model": {"name_or_path": f"C:\\runs\\af\\AFA-s{s}\\stages\\instruct\\model"}})
               for s in (2, 4)]
    other_seed_path = make_run(tmp_path, "AFA-s3", [], 3, values(10, 3, 0),
                               config_extra={"model": {"name_or_path": "/runs/af/AFA-s0/stages/instruct/model"}})
    comp = build(runs + windows + [other_seed_path])
    assert {k: v["seeds"] for k, v in comp["methods"].items()} == {
        "AFA": [0, 1, 12], "BA": [1], "AFA (2)": [2, 4], "AFA (3)": [3]}


def test_harness_metric_names_have_their_direction():
    from adaptlang.forgetting import direction

    assert [direction(m) for m in ("af_xcopa_acc", "xnli_acc_norm", "af_xquad_f1", "af_xquad_exact_match",
                                   "wikitext_word_perplexity", "senti_stderr", "ppl_token")] == \
        ["higher", "higher", "higher", "higher", "lower", None, "lower"]


def test_best_mean_is_bold_only_when_one_method_has_it():
    from adaptlang.compare_report import best_label

    def table(means):
        return {"direction": "higher", "rows": {k: {"overall": {"mean": v}} for k, v in means.items()}}
    assert best_label(table({"a": 0.2, "b": 0.5, "c": 0.1}), "overall") == "b"
    assert best_label(table({"a": 0.0, "b": 0.0, "c": 0.0}), "overall") is None
    assert best_label(table({"a": 0.4, "b": 0.4, "c": 0.1}), "overall") is None
