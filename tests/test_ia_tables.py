"""Issue 30: the Instruct-Align tables. The NusaWrites benchmark (data, prompts, seen/unseen
status), the authors' scoring mode, the quoted-options fix, the FLORES-only mlm default and
grid=ia_paper's benchmarks."""
import csv
import gzip
import random
import re

import numpy as np
import pytest
import torch

from adaptlang.benchmarks import classify, run_benchmarks
from adaptlang.config import load_config
from adaptlang.grid import expand
from adaptlang.languages import CORPORA, LanguageSet

from test_benchmarks import prefer_word

NUSAWRITES = ["abs", "bew", "bhp", "btk", "jav", "mad", "mak", "min", "mui", "rej", "sun"]


def authors_options(words: list[str], lang: str) -> str:
    """main_nlu_prompt.py to_prompt's [OPTIONS] (HLTCHKUST/InstructAlign), re-stated."""
    words = list(words)
    words[-1] = ("or " if lang == "en" else "atau ") + words[-1]
    return ", ".join(words) if len(words) > 2 else " ".join(words)


@pytest.mark.parametrize("name", ["nusax", "nusawrites"])
def test_prompts_list_the_options_as_the_authors_code_fills_them(name):
    task = classify.load_task(classify.TASKS_DIR / f"{name}.yaml")
    assert len(task.prompts) == 6
    for p in task.prompts:
        options = authors_options([task.label_words[p["lang"]][label] for label in task.labels], p["lang"])
        assert options in p["template"] and '"' not in p["template"]


def test_nusawrites_status_follows_the_ia_runs(model, tokenizer):
    cfg = load_config(["experiment=ia", "languages=nusax", "eval.batch_size=8",
                       "eval.classify.max_examples=6", "eval.classify.prompts=[id-2]"])
    prefer_word(model, tokenizer, "negatif")
    out = run_benchmarks(["nusawrites"], model, tokenizer, LanguageSet.from_config(cfg.languages), cfg)["nusawrites"]
    assert sorted(out["languages"]) == NUSAWRITES and not out["skipped"]
    assert {c for c, v in out["languages"].items() if v["class"] == "seen"} == {"jav", "min", "sun"}
    assert set(out["classes"]) >= {"seen", "unseen", "overall"} and "pretrained" not in out["classes"]
    with gzip.open(CORPORA / "nusawrites" / "sentiment" / "rej" / "test.csv.gz", "rt", encoding="utf-8") as fh:
        labels = [r["label"] for r in csv.DictReader(fh)][:6]
    assert out["languages"]["rej"]["accuracy"] == pytest.approx(labels.count("negative") / 6)
    assert out["task"]["scoring"] == "label_sum"


def test_sequence_mean_is_the_mean_log_prob_of_prompt_and_label(model):
    g = torch.Generator().manual_seed(1)
    prompts = [[1] + torch.randint(3, 600, (int(n),), generator=g).tolist() for n in (5, 11)]
    conts = [[[7], [8, 9]], [[10, 11, 12], [13]]]
    got = classify.score_labels(model, prompts, conts, pad=2, batch=3, scoring="sequence_mean")
    with torch.no_grad():
        seq = prompts[0] + conts[0][1]
        logp = torch.log_softmax(model(input_ids=torch.tensor([seq])).logits[0].float(), -1)
    direct = np.mean([float(logp[t - 1, seq[t]]) for t in range(1, len(seq))])
    assert got.shape == (2, 2) and got[0, 1] == pytest.approx(direct, abs=1e-4)
    summed = classify.score_labels(model, prompts, conts, pad=2, batch=3, scoring="label_sum")
    assert not np.allclose(summed, got)


def test_mlm_trains_on_flores_only_by_default():
    from adaptlang.composition import strategy_defaults
    assert strategy_defaults("mlm")["text"] == ["flores"]
    assert load_config(["strategy=mlm"]).strategy.mlm.text == ["flores"]


def test_ia_paper_grid_and_experiment_evaluate_both_benchmarks():
    runs, _ = expand(["grid=ia_paper"])
    for run in runs:
        cfg = load_config(run.overrides)
        assert list(cfg.eval.benchmarks) == ["perplexity", "nusax", "nusawrites"] and cfg.eval.stages == "last"
    cfg = load_config(["experiment=ia_paper", "languages=nusax"])
    assert list(cfg.eval.benchmarks) == ["nusax", "nusawrites"] and cfg.eval.classify.scoring == "sequence_mean"


def test_bad_scoring_is_refused():
    from adaptlang import UserError
    with pytest.raises(UserError, match=re.escape("eval.classify.scoring='mean'")):
        load_config(["eval.classify.scoring=mean"])


# ---- the authors' choices as options ---------------------------------------------------------


@pytest.fixture(scope="module")
def nusax_set():
    return LanguageSet.from_config(load_config(["languages=nusax"]).languages)


def test_mix_one_gives_each_pair_one_objective(nusax_set):
    from adaptlang.instructions.xling import XlingOptions, generate
    each, notes = generate(["jav"], nusax_set, XlingOptions.defaults(max_pairs=60), seed=0)
    one, _ = generate(["jav"], nusax_set, XlingOptions.defaults(max_pairs=60, mix="one"), seed=0)
    pairs = notes["bitext_pairs"]["jav"]
    assert len(each) == 3 * pairs and len(one) == pairs  # every pair here is long enough to perturb
    assert len({e["origin"] for e in one}) == pairs
    assert {e["granularity"] for e in one} == {"word", "span", "sentence"}


def test_authors_perturbation_infills_deletes_or_permutes():
    from adaptlang.instructions.perturb import g_authors, words
    text = "satu dua tiga empat lima enam tujuh delapan sembilan sepuluh sebelas dua-belas"
    seen = set()
    for i in range(200):
        g = g_authors(text, random.Random(i))
        seen.add(g.removed)
        out = g.text.split(" ")
        if g.removed == "infilling":
            assert len(out) == len(words(text)) and all(a in (b, "___") for a, b in zip(out, words(text)))
        elif g.removed == "deletion":
            assert all(w in words(text) for w in out) and len(out) <= len(words(text))
        elif g.removed == "permutation":
            assert sorted(out) == sorted(words(text))
    assert {"infilling", "deletion", "permutation", "infilling+deletion+permutation"} <= seen


def test_authors_perturbation_in_generated_examples(nusax_set):
    from adaptlang.instructions.xling import XlingOptions, generate
    examples, _ = generate(["sun"], nusax_set, XlingOptions.defaults(max_pairs=20, perturbation="authors",
                                                                    objectives=["word", "sentence"]), seed=1)
    denoising = [e for e in examples if e["granularity"] == "word"]
    assert denoising and all(e["perturbation"] == "authors" for e in denoising)
    assert any("___" in e["prompt"] for e in denoising)


def test_replayed_loss_on_the_whole_sequence(tokenizer):
    from adaptlang.composition import build_strategy
    from adaptlang.data import ExampleStream
    from adaptlang.strategy import StageContext
    from omegaconf import OmegaConf

    def buffer(**options):
        replay = build_strategy("replay", size=10, **options)
        ctx = StageContext(name="instruct", index=2, seed=1, train=OmegaConf.create({"batch_size": 8, "max_length": 64}),
                           config=OmegaConf.create({}), languages=None, stage_languages=[], tokenizer=tokenizer)
        new = ExampleStream([{"input_ids": [7, i], "labels": [7, i]} for i in range(10)], seed=0)
        return replay.setup_data(new, ctx).old.examples

    target_only, whole = buffer(), buffer(loss_on_prompt=True)
    assert [e["input_ids"] for e in target_only] == [e["input_ids"] for e in whole]
    assert all(-100 in e["labels"][1:] for e in target_only)
    bos = tokenizer.bos_token_id is not None
    assert all(e["labels"][bos:] == e["input_ids"][bos:] for e in whole)


def test_ia_paper_names_an_xp3_past_source():
    cfg = load_config(["experiment=ia_paper", "languages=nusax", "strategy=xling+replay"])
    assert cfg.strategy.replay.source == "xp3" and cfg.data.instructions.xp3.fields == "xp3"
    assert cfg.data.instructions.xp3.path.startswith("hub:bigscience/xP3")


# ---- the zero-shot row: adaptlang eval --run --------------------------------------------------


def test_eval_run_folder_is_a_compare_row(tmp_path, tokenizer):
    import json

    from adaptlang.cli import main
    from adaptlang.compare import build
    from conftest import make_model
    from test_compare import make_run

    make_model(tokenizer).save_pretrained(tmp_path / "m")
    tokenizer.save_pretrained(tmp_path / "m")
    zero = tmp_path / "runs" / "zero-shot-s0"
    args = ["eval", str(tmp_path / "m"), "eval.benchmarks=[perplexity]", "eval.max_sentences=2", "--run", str(zero)]
    assert main(args) == 0
    metrics = json.loads((zero / "metrics.json").read_text())
    assert metrics["run"] == "zero-shot-s0" and metrics["seed"] == 0 and (zero / "config.yaml").is_file()
    assert main(args) == 2  # an existing run folder is not overwritten unasked
    trained = make_run(tmp_path / "runs", "xling-s0", ["xling"], 0,
                       {"instruct": {"pretraining": 30.0, "adapting": 50.0, "other": 70.0}})
    comp = build([zero, trained], baseline=zero)
    assert list(comp["methods"]) == ["zero-shot", "xling"] and comp["baseline"] == "zero-shot"


# ---- bitext size: the evaluation guard only for what is evaluated --------------------------------


def test_flores_evaluation_part_is_trained_on_only_when_not_evaluated(nusax_set):
    from adaptlang.instructions import mlm
    from adaptlang.instructions.bitext import collect, flores_part
    from adaptlang.sources import FLORES_EVAL, flores_lines

    assert flores_part(load_config(["eval.benchmarks=[perplexity,nusax]"])) == "pool"
    assert flores_part(load_config(["eval.benchmarks=[nusax,nusawrites]"])) == "all"
    pool, notes = collect(["jav"], ["en"], ["flores"], [], nusax_set, "pool")
    every, _ = collect(["jav"], ["en"], ["flores"], [], nusax_set, "all")
    assert len(pool) == 500 and len(every) == 1012 and notes["bitext_dropped_evaluation_overlap"] == 0
    held_out = set(flores_lines(nusax_set.check("jav").flores, FLORES_EVAL))
    assert not any(p.target in held_out for p in pool) and sum(p.target in held_out for p in every) >= 500
    cfg = load_config(["languages=nusax", "eval.benchmarks=[nusax]"])
    assert len(mlm.sentences("jav", nusax_set, ["flores"], cfg)) > len(mlm.sentences("jav", nusax_set, ["flores"], None))


def test_authors_perturbation_is_redrawn_too(nusax_set):
    from adaptlang.instructions.xling import Builder, XlingOptions, generate, redraw
    opts = XlingOptions.defaults(max_pairs=5, perturbation="authors", objectives=["word"])
    examples, _ = generate(["sun"], nusax_set, opts, seed=1)
    builder = Builder(opts.template_data, opts.prompt_languages, nusax_set)
    again = [redraw(e, builder, opts, random.Random(i)) for i, e in enumerate(examples)]
    assert all(e["perturbation"] == "authors" for e in again)


def _nusax_english(split: str) -> list[dict]:
    with open(CORPORA / "nusax" / "sentiment" / "english" / f"{split}.csv", encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def test_english_sentiment_is_the_train_split_under_prompts_the_evaluation_does_not_use():
    from omegaconf import OmegaConf
    from adaptlang import instructions

    examples = instructions.build("english_sentiment", ["en"], OmegaConf.create({}), 0)
    train = _nusax_english("train")
    assert len(examples) == len(train) == 500
    assert [e["target"] for e in examples] == [" " + r["label"] for r in train]
    assert all(r["text"].strip() in e["prompt"] for e, r in zip(examples, train))
    test_texts = [r["text"].strip() for r in _nusax_english("test")]
    assert not any(t in e["prompt"] for e in examples for t in test_texts)
    evaluated = [part.strip() for name in ("nusax", "nusawrites")
                 for p in classify.load_task(classify.TASKS_DIR / f"{name}.yaml").prompts
                 for part in re.split(r"\{text\}|\{label\}", p["template"]) if len(part.strip()) > 12]
    assert evaluated and not any(part in e["prompt"] for e in examples for part in evaluated)
    # the same examples whatever the seed: replay's past data is what the tune stage trained on
    assert instructions.build("english_sentiment", ["en"], OmegaConf.create({}), 7) == examples


def test_replay_past_data_may_join_several_sources(tokenizer):
    from adaptlang import UserError
    from adaptlang.composition import build_strategy
    from adaptlang.plan import make_plan
    from test_replay_policies import new_stream, stage_ctx

    replay = build_strategy("replay", size=300, source=["english", "english_sentiment"], policy="balanced")
    ctx = stage_ctx(tokenizer)
    replay.setup_data(new_stream(), ctx)
    assert ctx.notes["replay_past_available"] == 2175 + 500
    assert ctx.notes["replay_groups"] == {"en/gsm8k_train_2000": 100, "en/nusax_english_train": 100,
                                          "en/self_instruct_seed_tasks": 100}
    with pytest.raises(UserError, match="a source name or a list"):
        build_strategy("replay", source=[])
    with pytest.raises(UserError, match="'nope'"):
        make_plan(load_config(["experiment=ia", "languages=nusax", "strategy=replay",
                               "strategy.replay.source=[english,nope]"]))


@pytest.mark.parametrize("experiment", ["ia", "ia_zeroshot", "ia_instruct"])
def test_ia_stand_in_tunes_on_sentiment_and_replays_what_it_tuned_on(experiment):
    cfg = load_config([f"experiment={experiment}", "languages=nusax", "strategy=xling+replay"])
    tune = [s for s in cfg.experiment.stages if s.name == "tune"]
    assert all(list(s.data.sources) == ["english", "english_sentiment"] for s in tune)
    if experiment != "ia_zeroshot":  # it has no (IA)1 stage to replay in
        assert list(cfg.strategy.replay.source) == ["english", "english_sentiment"]
