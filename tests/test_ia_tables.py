"""Issue 30: the Instruct-Align tables. The NusaWrites benchmark (data, prompts, seen/unseen
status), the authors' scoring mode, the quoted-options fix, the FLORES-only mlm default and
grid=ia_paper's benchmarks."""
import csv
import gzip
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
        assert list(load_config(run.overrides).eval.benchmarks) == ["perplexity", "nusax", "nusawrites"]
    cfg = load_config(["experiment=ia_paper", "languages=nusax"])
    assert list(cfg.eval.benchmarks) == ["nusax", "nusawrites"] and cfg.eval.classify.scoring == "sequence_mean"


def test_bad_scoring_is_refused():
    from adaptlang import UserError
    with pytest.raises(UserError, match=re.escape("eval.classify.scoring='mean'")):
        load_config(["eval.classify.scoring=mean"])
