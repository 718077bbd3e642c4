"""Benchmarks on hand-made cases with known answers: label scoring, zero-shot classification
from YAML, isotropy, FLORES k-shot translation, forgetting, ``adaptlang eval``."""
import csv
import json
import math

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from adaptlang import UserError
from adaptlang.benchmarks import BENCHMARKS, run_benchmarks
from adaptlang.benchmarks import classify, flores_kshot, isotropy
from adaptlang.benchmarks._scoring import score_separately, score_shared_prompt
from adaptlang.config import load_config
from adaptlang.sources import FLORES_EVAL, FLORES_POOL, flores_lines
from adaptlang.forgetting import forgetting
from adaptlang.languages import LanguageSet

from conftest import make_model

# ---- label scoring ---------------------------------------------------------------------------


def test_shared_prompt_scores_equal_separate_scoring(model):
    g = torch.Generator().manual_seed(0)
    prompts = [[1] + torch.randint(3, 600, (int(n),), generator=g).tolist() for n in (3, 17, 9, 25, 4)]
    conts = [[[5], [7, 8, 9], [10, 11]], [[6], [7, 8], [12, 13, 14, 15]], [[5], [9], [11]],
             [[20, 21], [22], [23]], [[30], [31, 32], [33]]]
    shared = np.array(score_shared_prompt(model, prompts, conts, pad_id=2, batch_size=2))
    separate = np.array(score_separately(model, prompts, conts, pad_id=2, batch_size=3))
    assert shared.shape == (5, 3) and np.all(shared < 0)
    assert np.allclose(shared, separate, atol=1e-4)
    # and both equal a plain forward pass over prompt + label
    with torch.no_grad():
        seq = torch.tensor([prompts[1] + conts[1][2]])
        logp = torch.log_softmax(model(input_ids=seq).logits[0].float(), -1)
    n = len(prompts[1])
    direct = sum(float(logp[n - 1 + t, tok]) for t, tok in enumerate(conts[1][2]))
    assert shared[1, 2] == pytest.approx(direct, abs=1e-4)


def test_weighted_f1_hand_example():
    gold = ["a", "a", "a", "b", "b", "c"]
    pred = ["a", "a", "b", "b", "c", "c"]
    # a: p=1 r=2/3 f=0.8 (3) | b: p=1/2 r=1/2 f=0.5 (2) | c: p=1/2 r=1 f=2/3 (1)
    expected = (0.8 * 3 + 0.5 * 2 + (2 / 3) * 1) / 6
    assert classify.weighted_f1(gold, pred, ["a", "b", "c"]) == pytest.approx(expected)


# ---- zero-shot classification from YAML ----------------------------------------------------------

ROWS = {"alpha": [("the food was great", "positive"), ("awful service", "negative"), ("it is a house", "neutral"),
                  ("terrible", "negative"), ("bad day", "negative"), ("lovely", "positive"), ("so so", "neutral"),
                  ("worst ever", "negative"), ("fine", "neutral"), ("nice", "positive")],
        "beta": [("good", "positive"), ("bad", "negative"), ("ok", "neutral"), ("great", "positive")]}


def write_task(tmp_path, name="mytask", prompts=None):
    data = tmp_path / "data"
    for folder, rows in ROWS.items():
        (data / folder).mkdir(parents=True)
        with open(data / folder / "test.csv", "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["id", "text", "label"])
            for i, (text, label) in enumerate(rows):
                w.writerow([i, text, label])
    (data / "gamma").mkdir()  # a language without the split: must be skipped, not dropped
    prompts = prompts or ['  - {id: e1, lang: en, template: "{text}\\nSentiment: {label}"}',
                          '  - {id: e2, lang: en, template: "Text: {text} Answer: {label}"}']
    task = tmp_path / f"{name}.yaml"
    task.write_text("\n".join([
        f"name: {name}", "data_dir: data", "split: test",
        "languages: {alpha: en, beta: fr, gamma: de}",
        "labels: [negative, neutral, positive]",
        "label_words: {en: {negative: sad, neutral: plain, positive: happy}}",
        "prompts:", *prompts, ""]), encoding="utf-8")
    return task


def eval_cfg(*overrides):
    return load_config(["eval.max_sentences=2", "eval.batch_size=8", *overrides])


def prefer_word(model, tokenizer, word: str):
    """Make the model prefer the tokens of `word` after any prompt: a zero LM head with a
    large bias on those tokens."""
    ids = set(tokenizer(" " + word, add_special_tokens=False)["input_ids"])
    ids |= set(tokenizer(word, add_special_tokens=False)["input_ids"])
    head = torch.nn.Linear(model.config.hidden_size, model.config.vocab_size, bias=True)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        head.bias[list(ids)] = 20.0
    model.lm_head = head
    return ids


def test_yaml_only_task_is_picked_up_and_an_always_positive_model_scores_the_positive_share(tmp_path, model, tokenizer):
    task = write_task(tmp_path)
    cfg = eval_cfg(f"eval.classify.task_files=[{task}]")
    langs = LanguageSet.from_config(cfg.languages)
    words = {w: set(tokenizer(" " + w, add_special_tokens=False)["input_ids"]) for w in ("sad", "plain", "happy")}
    assert not (words["happy"] & (words["sad"] | words["plain"]))  # the test needs disjoint label tokens
    prefer_word(model, tokenizer, "happy")
    out = run_benchmarks(["mytask"], model, tokenizer, langs, cfg)["mytask"]
    assert "mytask" not in BENCHMARKS  # looked up from the config, not registered for good
    assert set(out["languages"]) == {"en", "fr"} and "no test.csv" in out["skipped"]["de"]
    for code, folder in (("en", "alpha"), ("fr", "beta")):
        share = sum(label == "positive" for _, label in ROWS[folder]) / len(ROWS[folder])
        lang = out["languages"][code]
        assert lang["accuracy"] == pytest.approx(share)
        assert lang["weighted_f1"] == pytest.approx(share * 2 * share / (share + 1))  # F1 of 'positive' only
        assert set(lang["prompts"]) == {"e1", "e2"} and lang["n_examples"] == len(ROWS[folder])
    # en is a pretraining language of the default experiment's first stage, fr is adapted later
    assert out["languages"]["en"]["class"] == "pretrained" and out["languages"]["fr"]["class"] == "seen"
    assert out["classes"]["overall"]["accuracy"] == pytest.approx((0.3 + 0.5) / 2)


@pytest.mark.slow
def test_nusax_always_negative_model_gets_the_negative_share(model, tokenizer):
    from adaptlang.languages import CORPORA

    cfg = eval_cfg("eval.classify.max_examples=12", "eval.classify.prompts=[en-2]")
    langs = LanguageSet.from_config(cfg.languages)
    prefer_word(model, tokenizer, "negative")
    out = run_benchmarks(["nusax"], model, tokenizer, langs, cfg)["nusax"]
    assert len(out["languages"]) == 12 and out["task"]["prompts"] == ["en-2"]
    with open(CORPORA / "nusax" / "sentiment" / "javanese" / "test.csv", encoding="utf-8") as fh:
        labels = [r["label"] for r in csv.DictReader(fh)][:12]
    assert out["languages"]["jav"]["accuracy"] == pytest.approx(labels.count("negative") / 12)
    assert out["languages"]["jav"]["class"] == "unseen" and out["languages"]["id"]["class"] == "unseen"


def test_language_status_rules():
    langs = LanguageSet({"base": ["en", "id"], "new": ["jav", "sun"]}, )
    cfg = OmegaConf.create({"eval": {"classify": {"pretrained_languages": None}}, "experiment": {"stages": [
        {"name": "a", "data": {"languages": "base"}}, {"name": "b", "data": {"languages": ["jav", "sun"]}}]}})
    status, _ = classify.language_status(cfg, langs)
    assert status == {"en": "pretrained", "id": "pretrained", "jav": "seen", "sun": "seen"}
    cfg.eval.classify.pretrained_languages = ["en"]
    status, _ = classify.language_status(cfg, langs)
    assert status["en"] == "pretrained" and status["id"] == "seen" and "ace" not in status


def test_bad_task_files_are_user_errors(tmp_path):
    bad = write_task(tmp_path, "badtask", prompts=['  - {id: x, lang: en, template: "{label} first {text}"}'])
    with pytest.raises(UserError, match="end with"):
        classify.load_task(bad)
    with pytest.raises(UserError, match="neither a YAML file nor a folder"):
        classify.user_tasks([str(tmp_path / "missing.yaml")])
    clash = tmp_path / "other"
    clash.mkdir()
    (clash / "again.yaml").write_text(bad.read_text(encoding="utf-8").replace("{label} first {text}", "{text} {label}")
                                      .replace("data_dir: data", "data_dir: ../data"), encoding="utf-8")
    (clash / "nusax.yaml").write_text((clash / "again.yaml").read_text(encoding="utf-8").replace("name: badtask", "name: nusax"),
                                      encoding="utf-8")
    with pytest.raises(UserError, match="already a built-in benchmark"):
        classify.user_tasks([str(clash)])
    typo = tmp_path / "typo.yaml"
    typo.write_text("name: t\nlable: [a]\n", encoding="utf-8")
    with pytest.raises(UserError, match="Did you mean 'labels'"):
        classify.load_task(typo)


def test_unknown_benchmark_is_refused_before_a_run(tmp_path):
    from adaptlang.pipeline import run

    cfg = load_config([f"output_dir={tmp_path}", "eval.benchmarks=[perplexity,nusaxx]"])
    with pytest.raises(UserError, match="Did you mean 'nusax'"):
        run(cfg)
    assert not any(tmp_path.iterdir())


# ---- isotropy -------------------------------------------------------------------------------------


def test_self_similarity_known_answers():
    v = np.array([1.0, 2.0, 3.0])
    assert isotropy.self_similarity([np.stack([v, v, v]), np.stack([2 * v, v])]) == pytest.approx(1.0)
    assert isotropy.self_similarity([np.eye(3)]) == pytest.approx(0.0)
    assert isotropy.self_similarity([np.array([[1.0, 0.0], [1.0, 1.0]])]) == pytest.approx(1 / math.sqrt(2))
    rng = np.random.default_rng(0)
    same = np.tile(v, (6, 1))
    assert isotropy.anisotropy(same, np.array([0, 0, 1, 1, 2, 2]), 50, rng) == pytest.approx(1.0)
    opposite = np.array([[1.0, 0.0], [-1.0, 0.0]])
    assert isotropy.anisotropy(opposite, np.array([0, 1]), 20, rng) == pytest.approx(-1.0)  # never the same sentence


def test_type_groups_use_one_occurrence_per_sentence():
    tokens = np.array([7, 7, 8, 7, 8, 9, 7])
    sents = np.array([0, 0, 0, 1, 1, 1, 2])
    groups = isotropy.type_groups(tokens, sents, min_contexts=2, max_occurrences=10, rng=np.random.default_rng(0))
    assert [sorted(g.tolist()) for g in groups] == [[0, 3, 6], [2, 4]]  # 9 occurs in one sentence only
    capped = isotropy.type_groups(tokens, sents, 3, 2, np.random.default_rng(0))
    assert len(capped) == 1 and len(capped[0]) == 2


def test_isotropy_benchmark_per_language_and_class(model, tokenizer):
    langs = LanguageSet({"pretraining": ["en", "ru"], "other": ["co"]}, extra={"zz": {"name": "Nowhere"}})
    langs.classes["other"].append("zz")
    cfg = eval_cfg("eval.isotropy.sentences=12", "eval.isotropy.min_contexts=3", "eval.isotropy.layers=[0,-1]")
    out = run_benchmarks(["isotropy"], model, tokenizer, langs, cfg)["isotropy"]
    assert set(out["languages"]) == {"en", "ru", "co"} and "not in FLORES-200 or UDHR" in out["skipped"]["zz"]
    en = out["languages"]["en"]
    assert set(en["layers"]) == {"0", "-1"} and en["n_types"] > 0
    assert -1 <= en["anisotropy"] <= 1 and -1 <= en["self_similarity"] <= 1
    assert en["adjusted_self_similarity"] == pytest.approx(en["self_similarity"] - en["anisotropy"])
    # layer 0 = input embeddings: every occurrence of a token type is the same vector
    assert en["layers"]["0"]["self_similarity"] == pytest.approx(1.0)
    assert out["classes"]["pretraining"]["n_languages"] == 2
    with pytest.raises(UserError, match="out of range"):
        run_benchmarks(["isotropy"], model, tokenizer, langs, eval_cfg("eval.isotropy.layers=[5]"))


# ---- FLORES k-shot ----------------------------------------------------------------------------------


def test_sacrebleu_scores_on_a_hand_example():
    # the cat sat on the mat / the cat sat on a mat: n-gram precisions 5/6, 3/5, 2/4, 1/3, no brevity penalty
    s = flores_kshot.score_translations(["the cat sat on the mat"], ["the cat sat on a mat"])
    assert s["bleu"] == pytest.approx(100 * (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25, abs=1e-6)
    assert flores_kshot.score_translations(["a b c d e"], ["a b c d e"])["chrf"] == pytest.approx(100.0)
    assert "word_order" not in s["signatures"]["chrf"] and "nw:2" in s["signatures"]["chrf"]  # chrF++
    assert "tok:13a" in s["signatures"]["bleu"]


def test_no_shot_equals_its_test_sentence():
    eng_pool, eng_test = flores_lines("eng_Latn", FLORES_POOL), flores_lines("eng_Latn", FLORES_EVAL)
    fra_pool, fra_test = flores_lines("fra_Latn", FLORES_POOL), flores_lines("fra_Latn", FLORES_EVAL)
    for j, line in enumerate(list(FLORES_EVAL)[:40]):
        shots = flores_kshot.pick_shots(line, 4, 0, eng_pool, fra_pool, eng_test[j], fra_test[j])
        assert len(set(shots)) == 4 and all(0 <= i < len(FLORES_POOL) for i in shots)
        assert all(eng_pool[i] != eng_test[j] and fra_pool[i] != fra_test[j] for i in shots)
    # a pool that contains the test pair itself: it is never picked
    pool_en, pool_x = ["a", "b", "test", "c", "d"], ["A", "B", "TEST", "C", "D"]
    for seed in range(30):
        assert 2 not in flores_kshot.pick_shots(7, 4, seed, pool_en, pool_x, "test", "TEST")
    with pytest.raises(UserError, match="usable pairs"):
        flores_kshot.pick_shots(7, 5, 0, pool_en, pool_x, "test", "TEST")


def test_prompt_is_the_appendix_c_prompt():
    template = flores_kshot.load_prompt("af")
    p = flores_kshot.build_prompt(template, "French", [("s1", "t1"), ("s2", "t2"), ("s3", "t3"), ("s4", "t4")], "src")
    assert "translate the given sentence in English to language French. There are 4 examples" in p
    assert "Produce the translation of the 5th sentence:\nEnglish: s1\nFrench: t1\n" in p
    assert p.index("English: s4") < p.index("English: src") and p.endswith("<|im_start|>assistant\n")


def test_flores_benchmark_skips_and_scores(monkeypatch, model, tokenizer):
    langs = LanguageSet({"pretraining": ["en", "ru"], "adapting": ["fr", "se"]})
    cfg = eval_cfg("eval.flores.sentences=3", "eval.flores.max_new_tokens=4")
    out = run_benchmarks(["flores_4shot"], model, tokenizer, langs, cfg)["flores_4shot"]
    assert set(out["languages"]) == {"ru", "fr"} and out["shots"] == 4
    assert out["skipped"] == {"en": "the source language (English -> X)", "se": "no FLORES-200 text"}
    assert 0 <= out["languages"]["fr"]["chrf"] <= 100 and "nrefs:1" in out["signatures"]["bleu"]
    # the references come back as hypotheses -> 100: the scoring is aligned with the test lines
    refs = {name: flores_lines(code, FLORES_EVAL)[:3] for name, code in (("French", "fra_Latn"), ("Russian", "rus_Cyrl"))}
    monkeypatch.setattr(flores_kshot, "generate",
                        lambda m, t, prompts, n, b: ([refs["French" if "French:" in prompts[0] else "Russian"][i]
                                                      for i in range(len(prompts))], 0))
    out = run_benchmarks(["flores_kshot"], model, tokenizer, langs, eval_cfg("eval.flores.sentences=3", "eval.flores.shots=1",
                                                                           "eval.flores.prompt=plain"))["flores_kshot"]
    assert out["shots"] == 1 and out["languages"]["fr"]["bleu"] == pytest.approx(100.0)
    assert out["classes"]["overall"]["chrf"] == pytest.approx(100.0)


def test_flores_settings_are_checked_before_running(model, tokenizer):
    langs = LanguageSet({"pretraining": ["en", "ru"]})
    with pytest.raises(UserError, match="unknown prompt"):
        run_benchmarks(["flores_4shot"], model, tokenizer, langs, eval_cfg("eval.flores.prompt=fancy"))
    with pytest.raises(UserError, match="neither a language class"):
        run_benchmarks(["flores_4shot"], model, tokenizer, langs, eval_cfg("eval.flores.languages=[frr]"))


# ---- forgetting ---------------------------------------------------------------------------------------


def test_forgetting_deltas_from_the_first_stage():
    def stage(ppl_pre, ppl_new, acc):
        return {"eval": {"perplexity": {"classes": {"pretraining": {"bits_per_char": ppl_pre, "n_languages": 2},
                                                    "adapting": {"bits_per_char": ppl_new, "n_languages": 3}}},
                         "nusax": {"classes": {"pretrained": {"accuracy": acc}}}}}

    stages = {"pretrain": stage(2.0, 5.0, 0.5), "adapt": stage(2.5, 3.0, 0.4), "instruct": stage(1.5, 2.0, 0.6)}
    f = forgetting(stages)
    assert f["baseline"] == "pretrain" and list(f["deltas"]) == ["adapt", "instruct"]
    assert f["deltas"]["adapt"]["perplexity"]["pretraining"] == {"bits_per_char": pytest.approx(0.5)}
    assert f["deltas"]["instruct"]["perplexity"]["adapting"]["bits_per_char"] == pytest.approx(-3.0)
    assert f["deltas"]["adapt"]["nusax"]["pretrained"]["accuracy"] == pytest.approx(-0.1)
    assert f["worse"]["adapt"] == {"perplexity": {"pretraining": ["bits_per_char"]}, "nusax": {"pretrained": ["accuracy"]}}
    assert "instruct" not in f["worse"]
    assert f["direction"] == {"bits_per_char": "lower", "accuracy": "higher"}
    assert forgetting(stages, baseline="adapt")["deltas"]["instruct"]["nusax"]["pretrained"]["accuracy"] == pytest.approx(0.2)
    assert forgetting({"only": stage(1, 1, 1)})["deltas"] == {}


# ---- adaptlang eval ---------------------------------------------------------------------------------


def test_eval_command_runs_the_suite_on_a_saved_model(tmp_path, tokenizer):
    from adaptlang.cli import main

    model = make_model(tokenizer)
    model.save_pretrained(tmp_path / "m")
    tokenizer.save_pretrained(tmp_path / "m")
    task = write_task(tmp_path)
    langs = tmp_path / "langs.yaml"
    langs.write_text("classes:\n  pretraining: [en, ru]\n  adapting: [fr, se]\n", encoding="utf-8")
    out = tmp_path / "eval.json"
    code = main(["eval", str(tmp_path / "m"), f"languages={langs}", "eval.benchmarks=[perplexity,isotropy,flores_4shot,mytask]",
                 "eval.max_sentences=2", "eval.isotropy.sentences=8", "eval.isotropy.min_contexts=2",
                 "eval.flores.sentences=2", "eval.flores.max_new_tokens=3", f"eval.classify.task_files=[{task}]",
                 "--out", str(out)])
    assert code == 0
    metrics = json.loads(out.read_text())
    assert metrics["schema"] == "adaptlang.metrics/1" and metrics["status"] == "complete"
    results = metrics["stages"]["eval"]["eval"]
    assert set(results) == {"perplexity", "isotropy", "flores_4shot", "mytask"}
    for name, res in results.items():
        assert {"languages", "classes", "skipped"} <= set(res), name
    assert "se" in results["flores_4shot"]["skipped"] and "de" in results["mytask"]["skipped"]
    assert main(["eval", str(tmp_path / "m"), "eval.benchmarks=[isotropi]", "--out", str(tmp_path / "x.json")]) == 2
