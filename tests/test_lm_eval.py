"""Downstream tasks through lm-evaluation-harness on the in-memory tiny model (no hub, no network)."""
import json

import pytest

from adaptlang import UserError, load_config
from adaptlang.benchmarks import check_benchmarks, run_benchmarks
from adaptlang.cli import main as cli_main
from adaptlang.languages import LanguageSet

from conftest import QUICK

pytest.importorskip("lm_eval")

SMALL = LanguageSet({"pretraining": ["en", "et"], "adapting": ["tr"], "other": ["id", "se"]})


def config(*overrides):
    return load_config(["eval.benchmarks=[lm_eval]", "data.max_lines_per_language=40", *overrides])


def run(model, tokenizer, cfg, languages=SMALL):
    check_benchmarks(["lm_eval"], cfg, languages)
    return run_benchmarks(["lm_eval"], model, tokenizer, languages, cfg)["lm_eval"]


def test_shipped_xcopa_and_sib200_per_language_and_class(model, tokenizer):
    import torch

    before = torch.random.get_rng_state()
    res = run(model, tokenizer, config("eval.lm_eval.limit=3"))
    assert torch.equal(before, torch.random.get_rng_state())  # training continues on the same stream
    langs = res["languages"]
    # XCOPA: its 11 languages (ht, qu are outside the language table: class 'unlisted')
    assert {"et", "tr", "id", "ht", "qu", "zh"} <= set(langs)
    assert langs["ht"]["class"] == "unlisted" and langs["et"]["class"] == "pretraining"
    for code in ("en", "et", "tr", "id"):  # SIB-200 for the set's languages that have it
        assert 0.0 <= langs[code]["sib200_acc"] <= 1.0 and "sib200_acc_stderr" in langs[code]
        assert langs[code]["sib200_n_examples"] == 3
    assert "se (sib200)" in res["skipped"]
    for cls in ("pretraining", "adapting", "other", "overall", "pretrained"):
        assert "xcopa_acc" in res["classes"][cls] and "xcopa_acc" in res["class_stderr"][cls]
    # SIB-200 text is FLORES-200 text: the 57 English test rows of the FLORES pool are dropped
    assert res["dropped_flores_pool"]["sib200"]["en"] == 57
    assert res["tasks"]["sib200"]["sib200_eng_Latn"]["n_dropped_flores_pool"] == 57
    leak = res["leakage"]["sib200"]["en"]
    assert leak == {"n_eval": 204 - 57, "in_training_text": 0, "in_flores_pool": 0}
    assert res["leakage"]["xcopa"]["et"]["n_eval"] == 500
    json.dumps(res)  # goes into metrics.json as is


def test_shared_prompt_scoring_gives_the_harness_own_results(model, tokenizer):
    """Our shared-prompt loglikelihood (the default) against the harness's HFLM, same requests."""
    fast = run(model, tokenizer, config("eval.lm_eval.tasks=[sib200,xcopa_et]", "eval.lm_eval.limit=6"))
    plain = run(model, tokenizer, config("eval.lm_eval.tasks=[sib200,xcopa_et]", "eval.lm_eval.limit=6",
                                         "eval.lm_eval.shared_prompt=false"))
    for code, row in plain["languages"].items():
        for metric, value in row.items():
            if metric.endswith("_acc") or metric.endswith("_acc_norm"):
                assert fast["languages"][code][metric] == pytest.approx(value), (code, metric)


def test_user_task_yaml_plugs_in_without_code(model, tokenizer, tmp_path):
    """The way to add a task: a harness YAML and its data (a NusaX-style sentiment set in Swahili)."""
    rows = [("Chakula kilikuwa kitamu sana", "positive"), ("Huduma ilikuwa mbaya", "negative"),
            ("Ni siku ya kawaida", "neutral"), ("Nimefurahi sana leo", "positive")]
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"text": t, "label": lab}) + "\n" for t, lab in rows), encoding="utf-8")
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "senti_sw.yaml").write_text(f"""
task: senti_sw
dataset_path: json
dataset_kwargs: {{data_files: {{test: {data}}}}}
test_split: test
output_type: multiple_choice
doc_to_text: "Sentence: {{{{text}}}}\\nSentiment:"
doc_to_choice: [positive, neutral, negative]
doc_to_target: label
metric_list: [{{metric: acc}}]
metadata: {{version: 1.0, language: sw}}
""", encoding="utf-8")
    res = run(model, tokenizer, config("eval.lm_eval.tasks=[senti_sw]", f"eval.lm_eval.include_path=[{tmp_path / 'tasks'}]"))
    assert res["languages"]["sw"]["senti_n_examples"] == 4  # the task's name without its language
    assert res["languages"]["sw"]["class"] == "unlisted" and "senti_acc" in res["classes"]["overall"]
    assert res["leakage"]["senti"]["sw"]["n_eval"] == 4


def test_hub_task_runs_by_its_harness_name_on_a_local_copy(model, tokenizer, tmp_path):
    """xnli by its harness name; its data from a local copy the test writes (never the hub)."""
    for lang in ("en", "fr"):
        rows = [{"premise": f"premise {i}", "hypothesis": f"hypothesis {i}", "label": i % 3} for i in range(4)]
        for split in ("train", "validation"):
            path = tmp_path / "xnli" / f"xnli_{lang}" / f"{split}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    cfg = config("eval.lm_eval.tasks=[xnli_en,xnli_fr]", f"eval.lm_eval.local_data.xnli={tmp_path / 'xnli'}",
                 "eval.lm_eval.num_fewshot=1")
    res = run(model, tokenizer, cfg)
    assert res["languages"]["en"]["xnli_n_examples"] == 4 and "xnli_acc" in res["classes"]["overall"] and res["languages"]["fr"]["class"] == "unlisted"
    assert res["settings"]["num_fewshot"] == 1


def test_af_paper_suite_is_one_override():
    from adaptlang.benchmarks.lm_eval_tasks import _options

    opts = _options(config("eval.lm_eval.tasks=[af_paper]"))
    # AF Appendix C, with its prompts (XNLI's figure is missing from our copy; XL-Sum: no harness task)
    assert opts["tasks"] == ["xnli", "af_xcopa", "af_belebele", "af_xquad", "af_mlqa"]
    assert opts["include_path"][-1].endswith("harness_tasks/af_paper")


@pytest.mark.parametrize("overrides, fragment", [
    (["eval.lm_eval.tasks=[xcopaa]"], "unknown task 'xcopaa'. Did you mean 'xcopa'"),
    (["eval.lm_eval.include_path=[/nonexistent/tasks]"], "include_path: '/nonexistent/tasks' does not exist"),
    (["eval.lm_eval.tasks=[xnli_en]", "eval.lm_eval.local_data.xnli=/tmp"], "no validation.jsonl for task 'xnli_en'"),
])
def test_bad_input_refused_before_training(tmp_path, capsys, overrides, fragment):
    code = cli_main(["run", *QUICK, f"output_dir={tmp_path / 'runs'}", "name=x", "eval.benchmarks=[lm_eval]", *overrides])
    err = capsys.readouterr().err
    assert code == 2 and fragment in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "runs" / "x").exists()


def test_unreadable_task_data_is_refused_at_plan_time(tmp_path):
    (tmp_path / "t.yaml").write_text(f"""
task: broken_sw
dataset_path: json
dataset_kwargs: {{data_files: {{test: {tmp_path / 'missing.jsonl'}}}}}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{text}}}}"
doc_to_choice: [a, b]
doc_to_target: label
""", encoding="utf-8")
    cfg = config("eval.lm_eval.tasks=[broken_sw]", f"eval.lm_eval.include_path=[{tmp_path}]")
    with pytest.raises(UserError, match="the data of task 'broken_sw' cannot be read"):
        check_benchmarks(["lm_eval"], cfg, SMALL)
    (tmp_path / "missing.jsonl").write_text('{"text": "x", "label": 0}\n', encoding="utf-8")
    check_benchmarks(["lm_eval"], cfg, SMALL)  # readable now; but few-shot would draw from the test rows:
    with pytest.raises(UserError, match="its shots would come from its test rows"):
        check_benchmarks(["lm_eval"], config("eval.lm_eval.tasks=[broken_sw]", f"eval.lm_eval.include_path=[{tmp_path}]",
                                             "eval.lm_eval.num_fewshot=2"), SMALL)


@pytest.mark.slow  # a whole (tiny) run
def test_run_puts_lm_eval_into_metrics_forgetting_and_report(tmp_path):
    import adaptlang

    cfg = adaptlang.load_config(["strategy=none", f"output_dir={tmp_path}", "name=le", *QUICK,
                                 "eval.benchmarks=[lm_eval]", "eval.lm_eval.tasks=[xcopa_et,xcopa_tr]",
                                 "eval.lm_eval.limit=3"])
    path = adaptlang.run(cfg, adaptlang.compose("none"))
    metrics = json.loads((path / "metrics.json").read_text())
    for stage in metrics["stages"].values():
        assert set(stage["eval"]["lm_eval"]["languages"]) == {"et", "tr"}
    later = [s for s in metrics["stages"] if s != metrics["forgetting"]["baseline"]]
    assert "xcopa_acc" in metrics["forgetting"]["deltas"][later[0]]["lm_eval"]["overall"]
    assert metrics["forgetting"]["direction"]["xcopa_acc"] == "higher"   # so a drop counts as worse
    report = (path / "report.md").read_text()
    assert "## lm_eval by class" in report and "Leakage" in report


def test_reading_comprehension_from_release_files(model, tokenizer, tmp_path):
    """af_xquad (the paper's generation task) offline: XQuAD's release JSON converted by
    squad_local, then scored by exact match and F1; a file of another name is refused."""
    from adaptlang.benchmarks import squad_local

    release = {"version": "1.1", "data": [{"title": "t", "paragraphs": [
        {"context": f"Paragraph {p} says the answer is word{p}.",
         "qas": [{"id": f"{p}-{q}", "question": f"What does paragraph {p} say? ({q})",
                  "answers": [{"text": f"word{p}", "answer_start": 25}]} for q in range(2)]} for p in range(3)]}]}
    source = tmp_path / "xquad.en.json"
    source.write_text(json.dumps(release), encoding="utf-8")
    assert squad_local.main([str(source), "--out", str(tmp_path / "xquad")]) == 0
    rows = [json.loads(line) for line in (tmp_path / "xquad" / "xquad.en" / "validation.jsonl").open()]
    assert len(rows) == 6 and rows[5]["answers"] == {"text": ["word2"], "answer_start": [25]}
    assert "word1" in rows[2]["context"] and rows[2]["id"] == "1-0"

    res = run(model, tokenizer, config("eval.lm_eval.tasks=[af_xquad_en]",
                                       f"eval.lm_eval.local_data.af_xquad={tmp_path / 'xquad'}"))
    english = res["languages"]["en"]
    assert english["af_xquad_n_examples"] == 6 and english["class"] == "pretraining"
    assert 0.0 <= english["af_xquad_exact_match"] <= english["af_xquad_f1"] <= 1.0
    assert "af_xquad_f1" in res["classes"]["pretraining"]

    (tmp_path / "other.json").write_text("{}", encoding="utf-8")
    assert squad_local.main([str(tmp_path / "other.json"), "--out", str(tmp_path / "o")]) == 2
    assert not (tmp_path / "o").exists()
    (tmp_path / "bad" / "xquad.de.json").parent.mkdir()
    (tmp_path / "bad" / "xquad.de.json").write_text('{"data": [{"title": "no paragraphs"}]}', encoding="utf-8")
    assert squad_local.main([str(source), str(tmp_path / "bad" / "xquad.de.json"), "--out", str(tmp_path / "o")]) == 2
    assert not (tmp_path / "o").exists()   # the good file is not written either
