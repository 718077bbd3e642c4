"""vocab: the merge keeps old-language tokenization exact, new rows are initialized as asked,
only new rows (and the LM head) train, old rows stay bit-identical, the result is plain
transformers, and af+vocab runs through the pipeline."""
import json
import time

import pytest
import torch
from accelerate import Accelerator
from omegaconf import OmegaConf
from transformers import AutoModelForCausalLM, AutoTokenizer

from adaptlang.composition import build_strategy
from adaptlang import UserError, load_config
from adaptlang.strategies.vocab import merge as vm
from adaptlang.sources import read_text
from adaptlang.data import ExampleStream, lm_examples
from adaptlang.languages import CORPORA, LanguageSet
from adaptlang.models import load_pretrained, train_tokenizer
from adaptlang.train import train_stage

from adaptlang.stage_runner import model_shape, restore_ownership

from conftest import QUICK, bits, make_model, stage_ctx, train_options

TCFG = train_options(lr=5e-3)


def config(*extra):
    return load_config(["strategy=vocab", *QUICK, *extra])


def context(cfg, index=1):
    return stage_ctx("adapt", index, config=cfg)



def vendored_texts(code: str) -> list[str]:
    """Every vendored text of a language, enumerated independently of the strategy."""
    lang = LanguageSet.from_config(load_config([]).languages).check(code)
    files = [CORPORA / "ntrex128" / f"{lang.ntrex}.txt.gz", CORPORA / "flores200" / "devtest" / f"{lang.flores}.devtest.gz",
             CORPORA / "udhr" / f"{lang.udhr}.txt.gz"]
    return [t for f in files if f.is_file() for t in read_text(str(f))]


# --- the merge over every vendored pretraining-language text ------------------------------

@pytest.fixture(scope="module")
def expanded():
    """A base tokenizer trained on the 12 pretraining languages, expanded with a vocabulary
    learned on the adapting languages (the default pairing)."""
    cfg = config("data.max_lines_per_language=150")
    ctx = context(cfg)
    pre = ctx.languages.resolve("pretraining")
    texts = [t for c in pre for t in read_text(str(CORPORA / "ntrex128" / f"{ctx.languages.check(c).ntrex}.txt.gz"), 150)]
    base = train_tokenizer(texts, OmegaConf.create({"vocab_size": 1500, "character_coverage": 0.99}), seed=0)
    model = make_model(base)
    strategy = build_strategy("vocab", vocab_size=3000, fertility="pretraining,adapting")
    started = time.perf_counter()
    model, merged = strategy.setup_model(model, base, ctx)
    return {"base": base, "merged": merged, "model": model, "strategy": strategy, "ctx": ctx,
            "seconds": time.perf_counter() - started}


@pytest.mark.slow
def test_every_vendored_pretraining_text_tokenizes_as_before(expanded):
    base, merged = expanded["base"], expanded["merged"]
    notes = expanded["ctx"].notes["vocab"]
    assert notes["added_tokens"] > 100 and len(merged) == len(base) + notes["added_tokens"]
    checked = 0
    for code in expanded["ctx"].languages.resolve("pretraining"):
        texts = vendored_texts(code)
        old = [e.ids for e in base.backend_tokenizer.encode_batch(texts)]
        new = [e.ids for e in merged.backend_tokenizer.encode_batch(texts)]
        differ = [texts[i][:60] for i, (a, b) in enumerate(zip(old, new)) if a != b]
        assert not differ, f"{code}: {len(differ)} texts tokenize differently, e.g. {differ[:2]}"
        # and through the transformers call (special tokens added) on a sample
        assert base(texts[::20])["input_ids"] == merged(texts[::20])["input_ids"]
        checked += len(texts)
    assert checked > 12 * 2500  # NTREX (1997) + FLORES (1012) (+ UDHR) per language
    for code in expanded["ctx"].languages.resolve("pretraining"):
        f = notes["fertility"][code]
        assert f["before"] == f["after"]


def test_new_languages_get_new_tokens_and_lower_fertility(expanded):
    fert = expanded["ctx"].notes["vocab"]["fertility"]
    for code in ("ja", "th", "ko"):  # scripts the base tokenizer only saw as bytes
        assert fert[code]["after"]["tokens_per_char"] < 0.8 * fert[code]["before"]["tokens_per_char"], code
    lowered = [c for c in expanded["ctx"].languages.resolve("adapting") if c in fert
               and fert[c]["after"]["tokens_per_word"] < fert[c]["before"]["tokens_per_word"]]
    assert len(lowered) >= 10
    ids = expanded["merged"]("これは日本語の文です。")["input_ids"]
    assert any(i >= len(expanded["base"]) for i in ids)


def test_without_protection_old_text_would_change(expanded):
    """The protection step is what keeps old languages exact: a plain append-merge changes
    some old-language tokenizations (so the test above can fail)."""
    ctx = expanded["ctx"]
    texts = [t for c in ("fr", "pt", "nl", "da", "no", "pl") for t in
             read_text(str(CORPORA / "ntrex128" / f"{ctx.languages.check(c).ntrex}.txt.gz"), 150)]
    new = vm.train_new_vocabulary(texts, 3000)
    data, stats = vm.merge_vocabularies(expanded["base"], new, [], len(expanded["base"]))
    assert stats["dropped_for_old_languages"] == 0
    merged = vm.to_transformers(expanded["base"], data)
    old_texts = vendored_texts("en")[:800] + vendored_texts("es")[:800]
    assert vm.changed_texts(expanded["base"], merged, old_texts), "expected some old-language text to change"


def test_merged_tokenizer_saves_and_reloads_with_autotokenizer(expanded, tmp_path):
    merged = expanded["merged"]
    merged.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    texts = vendored_texts("fr")[:300] + vendored_texts("th")[:100] + vendored_texts("en")[:300]
    assert again(texts)["input_ids"] == merged(texts)["input_ids"]
    assert len(again) == len(merged)
    assert max(i for ids in again(texts)["input_ids"] for i in ids) >= len(expanded["base"])
    assert again.decode(again("Bonjour à tous")["input_ids"], skip_special_tokens=True) == "Bonjour à tous"


def test_model_rows_match_the_merged_vocabulary(expanded):
    model, merged = expanded["model"], expanded["merged"]
    assert model.get_input_embeddings().weight.shape[0] == len(merged) == model.config.vocab_size
    assert model.get_output_embeddings().weight.shape[0] == len(merged)


# --- initialization -----------------------------------------------------------------------

def small_setup(tokenizer, tied, init, protect="en", **options):
    cfg = config()
    ctx = context(cfg)
    model = make_model(tokenizer, tied=tied)
    before = {"emb": model.get_input_embeddings().weight.detach().clone(),
              "head": model.get_output_embeddings().weight.detach().clone()}
    strategy = build_strategy("vocab", vocab_size=800, languages="fr", protect=protect, init=init, fertility="fr,en",
                                   **options)
    model, merged = strategy.setup_model(model, tokenizer, ctx)
    ctx.model, ctx.tokenizer = model, merged
    return model, merged, strategy, ctx, before


def weights(model):
    """(embedding, head) weights with peft's trainable rows applied."""
    emb, head = model.get_input_embeddings(), model.get_output_embeddings()
    get = lambda m: m.get_merged_weights(m.active_adapters) if hasattr(m, "get_merged_weights") else m.weight  # noqa: E731
    return get(emb).detach(), get(head).detach()


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
@pytest.mark.parametrize("init", ["random", "mean", "subword-mean", "focus"])
def test_new_rows_initialized_by_method(tokenizer, tied, init):
    model, merged, strategy, ctx, before = small_setup(tokenizer, tied, init, protect="none")
    n_old = before["emb"].shape[0]
    emb, head = weights(model)
    assert emb.shape[0] == len(merged) > n_old
    assert bits(emb[:n_old]) == bits(before["emb"]), "old embedding rows must be untouched"
    if tied:
        assert model.get_output_embeddings().base_layer.weight is model.get_input_embeddings().base_layer.weight
    else:
        assert bits(head[:n_old]) == bits(before["head"])
    new = emb[n_old:]
    if init == "random":
        assert abs(float(new.std()) - model.config.initializer_range) < 0.003 and abs(float(new.mean())) < 0.003
        assert not torch.allclose(new[0], new[1])
    elif init == "mean":
        assert torch.allclose(new, before["emb"].mean(0).expand_as(new), atol=1e-6)
        if not tied:
            assert torch.allclose(head[n_old:], before["head"].mean(0).expand_as(new), atol=1e-6)
    elif init == "focus":
        notes = ctx.notes["vocab"]["focus"]
        assert notes["covered"] + notes["random"] == len(new) and notes["covered"] >= len(new) / 2
        assert 1 <= notes["mean_nonzero_weights"] < notes["overlap"]  # sparse: a few overlap tokens each
        low, high = before["emb"].min(0).values, before["emb"].max(0).values
        inside = ((new >= low - 1e-6) & (new <= high + 1e-6)).all(-1)
        assert int(inside.sum()) >= notes["covered"]  # convex combinations of old rows stay in their box
        assert not torch.allclose(new[0], new[1])
    else:
        pieces = {i: p for p, i in merged.get_vocab().items() if i >= n_old}
        checked = 0
        for i, p in pieces.items():
            if p.startswith("\u2581") and "\u2581" not in p[1:] and len(p) > 2:
                old_ids = tokenizer(p[1:], add_special_tokens=False)["input_ids"]  # old tokenizer, plain text
                assert torch.allclose(emb[i], before["emb"][old_ids].mean(0), atol=1e-6), p
                if not tied:
                    assert torch.allclose(head[i], before["head"][old_ids].mean(0), atol=1e-6), p
                checked += 1
        assert checked > 20


# --- training: old rows bit-identical, new rows move, plain model afterwards ---------------

def train(model, merged, strategy, ctx, steps=6):
    texts = read_text(str(CORPORA / "ntrex128" / "fra.txt.gz"), 120)
    stream = ExampleStream(lm_examples(texts, merged, 32), seed=0)
    model, stats = train_stage(model, merged, stream, [strategy], TCFG, steps, Accelerator(cpu=True), ctx)
    strategy.on_stage_end(ctx)
    return model


def is_plain(model) -> bool:
    from peft.tuners.tuners_utils import BaseTunerLayer

    fresh = type(model)(model.config)
    return (not any(isinstance(m, BaseTunerLayer) for m in model.modules())
            and set(model.state_dict()) == set(fresh.state_dict()))


@pytest.mark.parametrize("tied, head", [(False, "new"), (False, "all"), (True, "all")],
                         ids=["untied-head-new", "untied-head-all", "tied"])
def test_only_new_rows_and_head_train_under_adamw_weight_decay(tokenizer, tmp_path, tied, head):
    model, merged, strategy, ctx, before = small_setup(tokenizer, tied, "mean", head=head)
    n_old = before["emb"].shape[0]
    body = {n: p.detach().clone() for n, p in model.named_parameters()
            if "embed_tokens" not in n and "lm_head" not in n}
    emb0, head0 = (w.clone() for w in weights(model))
    model = train(model, merged, strategy, ctx)
    assert is_plain(model)
    emb, out = model.get_input_embeddings().weight.detach(), model.get_output_embeddings().weight.detach()
    assert bits(emb[:n_old]) == bits(before["emb"]), "old embedding rows moved"
    assert not torch.equal(emb[n_old:], emb0[n_old:]), "new embedding rows did not train"
    params = dict(model.named_parameters())
    for n, p in body.items():
        assert bits(params[n.replace(".base_layer", "")]) == bits(p), f"body parameter {n} moved"
    if tied:
        assert out is emb or torch.equal(out, emb)
    elif head == "new":
        assert bits(out[:n_old]) == bits(before["head"]), "old head rows moved"
        assert not torch.equal(out[n_old:], head0[n_old:])
    else:  # the paper: the whole new LM head is learned
        assert not torch.equal(out[:n_old], before["head"]) and not torch.equal(out[n_old:], head0[n_old:])
    model.save_pretrained(tmp_path)
    merged.save_pretrained(tmp_path)
    again = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert type(again).__name__ == "MistralForCausalLM"
    assert bits(again.get_input_embeddings().weight) == bits(emb)
    assert again.get_input_embeddings().weight.shape[0] == len(AutoTokenizer.from_pretrained(tmp_path))
    # what vocab changed for its stage is undone by the stage runner's ownership rule, which allows
    # it (changes = {"vocabulary"}) to leave the embeddings resized
    restore_ownership(model, model_shape(make_model(tokenizer, tied=tied)), [strategy], "adapt")
    assert all(p.requires_grad for p in model.parameters()), "later stages start with everything trainable"


def test_lora_body_option_merges_adapters_back(tokenizer):
    model, merged, strategy, ctx, before = small_setup(tokenizer, False, "mean", body="lora", head="new")
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert any("lora_A" in n for n in names) and any("trainable_tokens_delta" in n for n in names)
    assert not any(n.endswith("q_proj.base_layer.weight") for n in names)
    q_before = model.model.layers[0].self_attn.q_proj.base_layer.weight.detach().clone()
    model = train(model, merged, strategy, ctx)
    assert is_plain(model)
    assert not torch.equal(model.model.layers[0].self_attn.q_proj.weight, q_before), "LoRA update not merged"
    n_old = before["emb"].shape[0]
    assert bits(model.get_input_embeddings().weight[:n_old]) == bits(before["emb"])


def test_full_body_option_trains_the_body_and_new_rows_but_not_old_rows(tokenizer):
    model, merged, strategy, ctx, before = small_setup(tokenizer, True, "mean", body="full", head="new")
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any("trainable_tokens_delta" in n for n in names) and any("q_proj" in n for n in names)
    assert not any("embed_tokens" in n and "delta" not in n for n in names), "old embedding rows would train"
    q_before = model.model.layers[0].self_attn.q_proj.weight.detach().clone()
    model = train(model, merged, strategy, ctx)
    assert is_plain(model)
    assert not torch.equal(model.model.layers[0].self_attn.q_proj.weight, q_before), "the body did not train"
    n_old = before["emb"].shape[0]
    emb = model.get_input_embeddings().weight
    assert bits(emb[:n_old]) == bits(before["emb"]) and model.get_output_embeddings().weight is emb


def test_works_on_a_model_loaded_by_path(tokenizer, tmp_path):
    make_model(tokenizer).save_pretrained(tmp_path / "base")
    tokenizer.save_pretrained(tmp_path / "base")
    model, tok = load_pretrained(str(tmp_path / "base"))
    old = model.get_input_embeddings().weight.detach().clone()
    cfg = config()
    ctx = context(cfg)
    strategy = build_strategy("vocab", vocab_size=800, languages="fr", protect="en", fertility="fr")
    model, merged = strategy.setup_model(model, tok, ctx)
    ctx.model, ctx.tokenizer = model, merged
    model = train(model, merged, strategy, ctx, steps=2)
    assert bits(model.get_input_embeddings().weight[: old.shape[0]]) == bits(old)
    model.save_pretrained(tmp_path / "adapted")
    merged.save_pretrained(tmp_path / "adapted")
    again, tok2 = load_pretrained(str(tmp_path / "adapted"))
    assert len(tok2) == again.config.vocab_size > len(tokenizer)


# --- user errors ---------------------------------------------------------------------------

@pytest.mark.parametrize("options, fragment", [
    ({"init": "zeros"}, "strategy.vocab.init='zeros'. Valid: focus, mean, random, subword-mean"),
    ({"init": "subword_mean"}, "Did you mean 'subword-mean'?"),
    ({"head": "old"}, "strategy.vocab.head='old'"),
    ({"body": "adapters"}, "strategy.vocab.body='adapters'. Valid: frozen, full, lora"),
    ({"vocab_size": 0}, "must be a positive number"),
])
def test_bad_options_are_user_errors(options, fragment):
    with pytest.raises(UserError, match=fragment.replace("?", r"\?").replace(".", r"\.").replace("'", "'")):
        build_strategy("vocab", **options)


def test_af_and_vocab_in_the_same_stage_is_refused_in_the_plan():
    from adaptlang.plan import make_plan

    with pytest.raises(UserError, match="'vocab' and 'af' conflict in stage 'adapt': both own embeddings.rows"):
        make_plan(load_config(["strategy=af+vocab", "strategy.af.stages=[adapt]", *QUICK]))
    # the AF paper's recipe: af in pretraining, vocab in adaptation
    make_plan(load_config(["strategy=af+vocab", "experiment=paper", *QUICK]))


def test_a_corpus_too_small_for_the_asked_pieces_is_a_user_error(tokenizer):
    """The plan's bound lets 4500 pass on 60 French lines; the learned model holds fewer pieces:
    refused at set-up, before the stage trains, with the count it supports."""
    from adaptlang.plan import make_plan

    cfg = config("strategy.vocab.languages=fr", "strategy.vocab.vocab_size=4500")
    make_plan(cfg)
    with pytest.raises(UserError, match=r"vocab_size=4500: the new languages' text \(60 lines of fr\) supports only \d+ pieces"):
        build_strategy("vocab", vocab_size=4500, languages="fr").setup_model(make_model(tokenizer), tokenizer, context(cfg))


@pytest.mark.parametrize("kind", ["WordPiece", "Unigram", "slow"])
def test_unknown_language_and_tokenizers_we_cannot_extend_are_user_errors(tokenizer, kind):
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    ctx = context(config())
    with pytest.raises(UserError, match="strategy.vocab.languages"):
        build_strategy("vocab", languages="xx").setup_model(make_model(tokenizer), tokenizer, ctx)
    if kind == "slow":
        base = type("SlowOnly", (), {"__len__": lambda self: 3})()  # a tokenizer without a tokenizers backend
        fragment = "slow tokenizer with no tokenizers backend"
    else:
        model = (models.WordPiece(vocab={"[UNK]": 0, "a": 1, "##b": 2}, unk_token="[UNK]") if kind == "WordPiece"
                 else models.Unigram([("<unk>", 0.0), ("a", -1.0), ("b", -2.0)], unk_id=0))
        base = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(model), eos_token="a")
        fragment = f"the base tokenizer is {kind}, not BPE; vocabulary expansion supports sentencepiece-style"
    with pytest.raises(UserError, match=fragment):
        build_strategy("vocab", languages="fr").setup_model(make_model(tokenizer), base, ctx)


# --- composed through the pipeline ----------------------------------------------------------

@pytest.mark.slow
def test_af_plus_vocab_runs_through_the_pipeline(tmp_path):
    import adaptlang

    cfg = adaptlang.load_config(["strategy=af+vocab", "experiment=paper", f"output_dir={tmp_path}", "name=afa",
                                 *QUICK, "strategy.af.every=2", "strategy.vocab.vocab_size=3000",
                                 "strategy.vocab.fertility=pretraining,adapting", "eval.benchmarks=[]"])
    # the config keeps the user's order; the plan sets up by phase (vocabulary before embeddings)
    assert list(cfg.strategy) == ["af", "vocab"] and cfg.strategy.vocab.stages == ["adapt"]
    assert [s.name for s in adaptlang.make_plan(cfg).strategies] == ["vocab", "af"]
    path = adaptlang.run(cfg)
    metrics = json.loads((path / "metrics.json").read_text())
    assert metrics["status"] == "complete"
    assert metrics["stages"]["pretrain"]["strategies"] == ["af"]
    assert metrics["stages"]["adapt"]["strategies"] == ["vocab"]
    notes = metrics["stages"]["adapt"]["strategy_notes"]["vocab"]
    assert notes["added_tokens"] > 0 and notes["fertility"]["ja"]["after"]["tokens"] < notes["fertility"]["ja"]["before"]["tokens"]
    assert notes["fertility"]["en"]["after"] == notes["fertility"]["en"]["before"]
    assert notes["trainable_parameters"] < metrics["stages"]["adapt"]["parameters"]["total"]
    model_dir = path / metrics["stages"]["instruct"]["model_dir"]
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    assert model.get_input_embeddings().weight.shape[0] == len(AutoTokenizer.from_pretrained(model_dir)) \
        == notes["vocab_size_after"]
    # held-out perplexity on the expanded model (a few languages; the e2e test covers all)
    from adaptlang.benchmarks.perplexity import perplexity

    adapt_dir = path / metrics["stages"]["adapt"]["model_dir"]
    few = LanguageSet({"pretraining": ["en"], "adapting": ["ja", "fr"]})
    ppl = perplexity(AutoModelForCausalLM.from_pretrained(adapt_dir), AutoTokenizer.from_pretrained(adapt_dir), few, cfg)
    assert set(ppl["languages"]) == {"en", "ja", "fr"}
    assert all(v["ppl_token"] > 1 and v["bits_per_char"] > 0 for v in ppl["languages"].values())
    report = (path / "report.md").read_text()
    assert "## Vocabulary expansion" in report and "| ja |" in report


def test_ba_config_loads():
    cfg = load_config(["strategy=vocab", "experiment=paper"])
    assert list(cfg.strategy) == ["vocab"] and cfg.experiment.stages[2].data.sources == ["english"]
