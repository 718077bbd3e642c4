import math

import pytest
import torch
from omegaconf import OmegaConf

from adaptlang import UserError
from adaptlang.benchmarks._common import means_by_group
from adaptlang.benchmarks.perplexity import METRICS, figures, score_groups, sentence_nll
from adaptlang.languages import LanguageSet
from adaptlang.models import load_pretrained

from conftest import make_model


def test_load_any_causal_lm_from_a_local_path(tmp_path, model, tokenizer):
    model.save_pretrained(tmp_path / "m")
    tokenizer.save_pretrained(tmp_path / "m")
    assert (tmp_path / "m" / "model.safetensors").is_file()
    loaded, tok = load_pretrained(str(tmp_path / "m"))
    assert tok("привет мир")["input_ids"] == tokenizer("привет мир")["input_ids"]
    ids = torch.tensor([[1, 5, 9, 30]])
    assert torch.allclose(loaded(input_ids=ids).logits, model(input_ids=ids).logits, atol=1e-5)


def test_bad_model_paths(tmp_path, model, tokenizer):
    with pytest.raises(UserError, match="does not exist"):
        load_pretrained(str(tmp_path / "nothing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no config.json"):
        load_pretrained(str(tmp_path / "empty"))
    small = make_model(tokenizer)
    small.resize_token_embeddings(100)
    small.save_pretrained(tmp_path / "mismatch")
    tokenizer.save_pretrained(tmp_path / "mismatch")
    with pytest.raises(UserError, match="do not match"):
        load_pretrained(str(tmp_path / "mismatch"))


def test_fast_scoring_equals_full_logits(model):
    ids = torch.randint(3, model.config.vocab_size, (3, 17), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
    keep = mask[:, 1:].bool()
    expected = torch.nn.functional.cross_entropy(logits[keep], ids[:, 1:][keep], reduction="sum")
    assert float(sentence_nll(model, ids, mask).sum()) == pytest.approx(float(expected), rel=1e-5)
    per_row = sentence_nll(model, ids, mask)
    assert torch.allclose(sentence_nll(model, ids, mask, chunk=5), per_row)  # the head, 5 positions at a time


def test_batching_does_not_change_scores(model, tokenizer):
    texts = ["a short one", "and a considerably longer sentence to pad the others", "mid length text"]
    one = score_groups(model, tokenizer, {"x": texts}, batch_size=1)["x"]
    many = score_groups(model, tokenizer, {"x": texts}, batch_size=3)["x"]
    assert one["n_tokens"] == many["n_tokens"] and one["nll"] == pytest.approx(many["nll"], rel=1e-4)


def test_figures_on_a_known_case():
    f = figures({"nll": 10 * math.log(4), "n_tokens": 10, "n_chars": 20, "n_bytes": 40, "n_sentences": 2})
    assert f["ppl_token"] == pytest.approx(4.0)
    assert f["bits_per_char"] == pytest.approx(1.0)  # 20 bits over 20 characters
    assert f["bits_per_byte"] == pytest.approx(0.5)


def test_class_means_as_perplexity_computes_them():
    langs = LanguageSet({"a": ["en", "fr"], "b": ["de"]})
    per = {c: {"ppl_token": v, "bits_per_char": v, "ppl_char": v, "bits_per_byte": v} for c, v in
           (("en", 1.0), ("fr", 3.0), ("de", 5.0))}
    means = means_by_group(per, langs.classes, METRICS)
    assert means["a"]["ppl_token"] == 2.0 and means["b"]["ppl_token"] == 5.0
    assert means["overall"]["ppl_token"] == 3.0 and means["overall"]["n_languages"] == 3


def test_perplexity_benchmark_lists_skipped_languages(model, tokenizer):
    from adaptlang.benchmarks import run_benchmarks

    langs = LanguageSet({"x": ["fr"]}, extra={"zz": {"name": "Nowhere"}})
    langs.classes["x"].append("zz")
    cfg = OmegaConf.create({"eval": {"max_sentences": 2, "batch_size": 2}, "data": {"eval_files": {}}})
    out = run_benchmarks(["perplexity"], model, tokenizer, langs, cfg)["perplexity"]
    assert list(out["languages"]) == ["fr"] and "zz" in out["skipped"]
    assert out["languages"]["fr"]["n_sentences"] == 2
