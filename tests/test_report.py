"""The report of one run (adaptlang.report): strategy sections come from the strategies'
``report_section`` hook, notes stay short, and the forgetting and perplexity tables show
figures a reader can use (relative change of a perplexity, log-ppl for enormous values),
from hand-written metrics dicts (no training)."""
import math
import re
from pathlib import Path

import pytest

import adaptlang.report as report_module
from adaptlang.compare_common import fmt, fmt_pct
from adaptlang.forgetting import forgetting
from adaptlang.report import render_report, write_report
from adaptlang.strategy import STRATEGIES, Strategy

CLASSES = ("pretraining", "adapting", "other")
# A number a reader cannot use: exponent notation, or seven and more digits in a row.
UNREADABLE = re.compile(r"\d[eE][+-]?\d|\d{7,}")


def perplexity(ppl_token: dict, ppl_char: dict) -> dict:
    classes = {c: {"ppl_token": ppl_token[c], "ppl_char": ppl_char[c], "bits_per_char": math.log2(ppl_char[c]),
                   "bits_per_byte": math.log2(ppl_char[c]) / 2, "n_languages": 2} for c in ppl_token}
    languages = {f"x{i}": {"class": c, "ppl_token": ppl_token[c], "bits_per_char": math.log2(ppl_char[c]),
                           "ppl_char": ppl_char[c], "source": "FLORES-200"} for i, c in enumerate(ppl_token)}
    return {"languages": languages, "classes": classes, "skipped": {}}


def stage(strategies, notes, ppl_token, ppl_char, accuracy=None) -> dict:
    ev = {"perplexity": perplexity(ppl_token, ppl_char)}
    if accuracy is not None:
        ev["nusax"] = {"languages": {}, "skipped": {}, "classes": {"pretraining": {"accuracy": accuracy}}}
    return {"strategies": strategies, "strategy_notes": notes,
            "train": {"steps": 5, "tokens": 640, "seconds": 0.5, "tokens_per_second": 1280.0,
                      "first_loss": 7.0, "final_loss": 6.5},
            "parameters": {"total": 1000, "trainable": 1000}, "eval": ev}


VOCAB_NOTES = {"vocab": {
    "added_tokens": 1234, "vocab_size_before": 8000, "vocab_size_after": 9234, "new_model_pieces": 4000,
    "candidates": 3900, "rounds": 3, "dropped_for_old_languages": 2666, "init": "subword-mean", "head": "all",
    "body": "frozen", "trainable_parameters": 123456, "learned_from": ["ja", "ko"], "protected": ["en"],
    "merge_seconds": 1.5,
    "fertility": {"ja": {"class": "adapting", "before": {"tokens_per_word": 2.5, "tokens_per_char": 0.8},
                         "after": {"tokens_per_word": 1.2, "tokens_per_char": 0.4}},
                  "en": {"class": "pretraining", "before": {"tokens_per_word": 1.3, "tokens_per_char": 0.25},
                         "after": {"tokens_per_word": 1.3, "tokens_per_char": 0.25}}}}}


def metrics_with(stages: dict) -> dict:
    m = {"schema": "adaptlang.metrics/1", "run": "r-s0", "status": "complete", "seed": 0,
         "strategies": sorted({s for st in stages.values() for s in st["strategies"]}),
         "environment": {"adaptlang": "0.1.0"}, "seconds": 3.0,
         "model": {"source": "built from config", "parameters": {"total": 1000, "trainable": 1000},
                   "vocab_size": 8000},
         "stages": stages}
    m["forgetting"] = forgetting(stages)
    return m


def small(pre, ada, oth):
    return dict(zip(CLASSES, (pre, ada, oth)))


@pytest.fixture
def vocab_metrics():
    return metrics_with({
        "pretrain": stage([], {}, small(200.0, 400.0, 300.0), small(8.0, 16.0, 12.0), 0.5),
        "adapt": stage(["vocab"], VOCAB_NOTES, small(250.0, 100.0, 330.0), small(9.0, 6.0, 12.5), 0.4),
    })


def section(md: str, heading: str) -> str:
    return md.split(heading, 1)[1].split("\n## ", 1)[0]


def test_vocab_fertility_section_comes_from_the_strategy_hook(vocab_metrics):
    md = render_report(vocab_metrics)
    vocab = section(md, "## Vocabulary expansion (stage adapt)")
    assert "1,234 tokens added (8,000 -> 9,234); 2,666 new pieces dropped" in vocab
    assert "| ja | adapting | 2.50 | 1.20 | 0.800 | 0.400 |" in vocab
    assert "| en | pretraining | 1.30 | 1.30 | 0.250 | 0.250 |" in vocab
    # the note itself is one short line that points to the section (no fertility dump)
    line = next(x for x in md.splitlines() if x.startswith("- adapt: vocab = "))
    assert len(line) < 120 and "tokens_per_word" not in line
    # only the strategies of a stage are asked: the same notes under a stage without vocab give no section
    vocab_metrics["stages"]["adapt"]["strategies"] = []
    assert "## Vocabulary expansion" not in render_report(vocab_metrics)


def test_sections_are_asked_from_the_registry(vocab_metrics, monkeypatch):
    class Probe(Strategy):
        calls = []

        @classmethod
        def report_section(cls, stage, notes):
            cls.calls.append((stage, dict(notes)))
            return ["", f"## Probe section of {stage}", "", f"probe saw {notes['probe_count']}"]

    monkeypatch.setitem(STRATEGIES._items, "probe", Probe)
    st = vocab_metrics["stages"]["adapt"]
    st["strategies"] = ["probe", "not-imported-plugin", "vocab"]  # an unknown name is skipped
    st["strategy_notes"] = {**st["strategy_notes"], "probe_count": 7}
    md = render_report(vocab_metrics)
    assert Probe.calls == [("adapt", st["strategy_notes"])]
    assert "## Probe section of adapt\n\nprobe saw 7" in md
    assert md.index("## Probe section") < md.index("## Vocabulary expansion")  # in the stage's strategy order

    class Broken(Strategy):
        @classmethod
        def report_section(cls, stage, notes):
            raise KeyError("fertility")

    monkeypatch.setitem(STRATEGIES._items, "probe", Broken)  # a failing section does not lose the report
    md = render_report(vocab_metrics)
    assert "The report section of strategy `probe` (stage adapt) failed: KeyError" in md
    assert "## Vocabulary expansion (stage adapt)" in md


def test_report_module_knows_no_strategy_note_keys():
    source = Path(report_module.__file__).read_text(encoding="utf-8")
    for key in ("fertility", "vocab_size_after", "vocab_size_before", "added_tokens", '"vocab"', "'vocab'"):
        assert key not in source, key


def test_large_notes_are_summed_up_in_one_line(vocab_metrics):
    pairs = {f"l{i:02d}": 100 + i for i in range(30)}
    vocab_metrics["stages"]["adapt"]["strategy_notes"] = {
        "bitext_pairs": pairs, "replay_groups": {"pretraining": 6, "adapting": 2}, "replay_policy": "reservoir",
        "languages": [f"l{i}" for i in range(40)]}
    md = render_report(vocab_metrics)
    lines = {x.split(" = ")[0]: x for x in md.splitlines() if x.startswith("- adapt: ")}
    assert lines["- adapt: bitext_pairs"] == (f"- adapt: bitext_pairs = 30 entries (sum {sum(pairs.values()):,}): "
                                              "l00 100, l01 101, l02 102, l03 103, and 26 more in metrics.json")
    assert lines["- adapt: replay_groups"] == '- adapt: replay_groups = {"pretraining": 6, "adapting": 2}'
    assert lines["- adapt: replay_policy"] == "- adapt: replay_policy = reservoir"
    assert lines["- adapt: languages"].endswith("l3, and 36 more in metrics.json")
    assert all(len(x) < 160 for x in lines.values())


def forgetting_cells(md: str) -> dict[str, dict[str, str]]:
    """``**stage / bench**`` -> "metric/class" -> cell, from the forgetting section."""
    out, current, header = {}, None, None
    for line in section(md, "## Forgetting: change from stage").splitlines():
        if line.startswith("**"):
            current, header = line.strip("*"), None
            out[current] = {}
        elif line.startswith("|") and current:
            cells = [c.strip() for c in line.strip("|").split(" | ")]
            if header is None:
                header = cells
            elif not set(line) <= set("|-:"):  # not the |---|---:| line
                out[current].update({f"{cells[0]}/{h}": c for h, c in zip(header[1:], cells[1:])})
    return out


def test_forgetting_table_relative_change_by_hand(vocab_metrics):
    md = render_report(vocab_metrics)
    cells = forgetting_cells(md)["adapt / perplexity"]
    # ppl_token pretraining 200 -> 250: +25% (worse); adapting 400 -> 100: −75%; other 300 -> 330: +10%
    assert cells["ppl_token/pretraining"] == "+25.0%* (200.00 → 250.00)"
    assert cells["ppl_token/adapting"] == "−75.0% (400.00 → 100.00)"
    assert cells["ppl_token/other"] == "+10.0%* (300.00 → 330.00)"
    # ppl_char 16 -> 6: −62.5%; bits per character is a difference, with both values
    assert cells["ppl_char/adapting"] == "−62.5% (16.000 → 6.000)"
    assert cells["bits_per_char/adapting"] == f"{fmt(math.log2(6) - 4).replace('-', '−')} (4.000 → {fmt(math.log2(6))})"
    assert forgetting_cells(md)["adapt / nusax"]["accuracy/pretraining"] == "−0.100* (0.500 → 0.400)"
    f = vocab_metrics["forgetting"]
    assert f["relative"]["adapt"]["perplexity"]["adapting"]["ppl_token"] == pytest.approx(-0.75)
    assert f["log_ratio"]["adapt"]["perplexity"]["adapting"]["ppl_char"] == pytest.approx(math.log(6 / 16))
    assert "bits_per_char" not in f["relative"]["adapt"]["perplexity"]["adapting"]  # not a perplexity
    assert f["deltas"]["adapt"]["perplexity"]["adapting"]["ppl_token"] == pytest.approx(-300.0)  # raw kept


def test_enormous_per_character_perplexities_are_readable(tmp_path):
    """An untrained model: ppl_char ~2.4e11 (the old table showed a delta of -241588325432)."""
    metrics = metrics_with({
        "pretrain": stage([], {}, small(3.0e5, 900.0, 700.0), small(2.4e11, 5.0e9, 8.0e10)),
        "adapt": stage([], {}, small(2.0e5, 450.0, 800.0), small(3.0e10, 6.0e9, 2.0e4)),
    })
    md = render_report(metrics)
    bad = [c for line in md.splitlines() if line.startswith("|")
           for c in line.strip("|").split(" | ") if UNREADABLE.search(c.replace(",", ""))]
    assert not bad, bad
    cells = forgetting_cells(md)["adapt / perplexity"]
    # 2.4e11 -> 3.0e10 is −87.5%; both values as log-ppl = ln(ppl)
    assert cells["ppl_char/pretraining"] == f"−87.5% (log-ppl {math.log(2.4e11):.2f} → {math.log(3.0e10):.2f})"
    assert cells["ppl_char/adapting"] == f"+20.0%* (log-ppl {math.log(5e9):.2f} → {math.log(6e9):.2f})"
    assert cells["ppl_token/pretraining"].startswith("−33.3% (log-ppl ")
    assert cells["ppl_token/adapting"] == "−50.0% (900.00 → 450.00)"
    # the class table: a perplexity too large to read as log-ppl, the others as numbers
    ppl = section(md, "## Held-out perplexity by language class")
    assert f"| pretrain | log-ppl {math.log(3.0e5):.2f} | {fmt(math.log2(2.4e11))} | 900.00 |" in ppl
    assert metrics["forgetting"]["deltas"]["adapt"]["perplexity"]["pretraining"]["ppl_char"] == pytest.approx(-2.1e11)
    write_report(tmp_path / "report.md", metrics, None)  # the file is the rendered text
    assert (tmp_path / "report.md").read_text() == md


@pytest.mark.parametrize("x, shown", [(2.4e11, "n/a (overflow)"), (241588.3, "241,588"), (123.456, "123.46"),
                                      (0.5, "0.500"), (0.000123456, "0.000123"), (0.0, "0.000"),
                                      (float("inf"), "n/a (overflow)"), (float("nan"), "n/a")])
def test_number_format_never_uses_exponents(x, shown):
    assert fmt(x) == shown


@pytest.mark.parametrize("r, shown", [(0.25, "+25.0%"), (-0.875, "−87.5%"), (0.0341, "+3.41%"), (0.0, "+0%"),
                                      (-0.99999, "−100.0%"), (11.5, "×12.5"), (5e6, "×1000+"), (None, "n/a")])
def test_relative_change_format(r, shown):
    assert fmt_pct(r) == shown


def test_the_lr_plot_is_written_beside_the_report(tmp_path, vocab_metrics):
    from adaptlang.schedules import lr_curve

    write_report(tmp_path / "report.md", vocab_metrics, None)
    assert not (tmp_path / "lr.png").exists()  # metrics without lr curves: no plot, no link
    for st in vocab_metrics["stages"].values():
        st["train"]["lr_by_step"] = lr_curve({"lr": 1e-3, "schedule": "wsd", "warmup_ratio": 0.2}, 5)
    write_report(tmp_path / "report.md", vocab_metrics, None)
    assert (tmp_path / "lr.png").read_bytes()[:4] == b"\x89PNG"
    assert "![learning rate](lr.png)" in (tmp_path / "report.md").read_text()
