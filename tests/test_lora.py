"""lora: only the adapters train (base weights bit-identical under AdamW with weight decay),
the merged model differs from the base and reloads as plain transformers, and lora composes
with vocab (new rows + head + adapters, body frozen)."""
import json
import tempfile

import pytest
import torch
from accelerate import Accelerator
from transformers import AutoModelForCausalLM

from adaptlang.composition import build_strategy
from adaptlang import UserError, load_config
from adaptlang.sources import read_text
from adaptlang.data import ExampleStream, lm_examples
from adaptlang.languages import CORPORA
from adaptlang.composition import compose
from adaptlang.train import train_stage

from adaptlang.stage_runner import model_shape, restore_ownership

from conftest import QUICK, bits, make_model, stage_ctx, train_options

TCFG = train_options()



def context(*extra):
    cfg = load_config(["strategy=lora", *QUICK, *extra])
    return stage_ctx("adapt", 1, config=cfg)


def train(model, tokenizer, strategies, ctx, steps=6):
    texts = read_text(str(CORPORA / "ntrex128" / "fra.txt.gz"), 120)
    stream = ExampleStream(lm_examples(texts, tokenizer, 32), seed=0)
    model, _ = train_stage(model, tokenizer, stream, strategies, TCFG, steps, Accelerator(cpu=True), ctx)
    return model


def setup(strategy, model, tokenizer, ctx):
    model, tokenizer = strategy.setup_model(model, tokenizer, ctx)
    ctx.model, ctx.tokenizer = model, tokenizer
    return model, tokenizer


def base_weights(model) -> dict[str, torch.Tensor]:
    """Every non-adapter parameter, by its plain transformers name."""
    return {n.replace(".base_layer", ""): p.detach().clone() for n, p in model.named_parameters()
            if "lora_" not in n and "ia3_l" not in n}


def is_plain(model) -> bool:
    from peft.tuners.tuners_utils import BaseTunerLayer

    fresh = type(model)(model.config)
    return (not any(isinstance(m, BaseTunerLayer) for m in model.modules())
            and set(model.state_dict()) == set(fresh.state_dict()))


@pytest.mark.parametrize("method, marker", [("lora", "lora_"), ("ia3", "ia3_l")])
def test_only_adapters_train_then_merge_into_a_plain_model(tokenizer, tmp_path, method, marker):
    ctx = context()
    model = make_model(tokenizer)
    shape0 = model_shape(model)
    original = {n: p.detach().clone() for n, p in model.named_parameters()}
    strategy = build_strategy("lora", method=method)
    model, _ = setup(strategy, model, tokenizer, ctx)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(marker in n for n in trainable)
    assert ctx.notes["adapters"]["adapter_parameters"] == sum(p.numel() for p in model.parameters() if p.requires_grad)
    adapters0 = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    model = train(model, tokenizer, [strategy], ctx)
    after = base_weights(model)
    assert set(after) == set(original)
    for n, p in after.items():  # AdamW with weight decay 0.1 never touched a frozen tensor
        assert bits(p) == bits(original[n]), f"base parameter {n} moved"
    moved = [n for n, p in model.named_parameters() if n in adapters0 and not torch.equal(p, adapters0[n])]
    assert len(moved) == len(adapters0), "some adapters did not train"
    strategy.on_stage_end(ctx)
    restore_ownership(model, shape0, [strategy], "adapt")  # the stage runner's rule: modules as before
    assert is_plain(model) and all(p.requires_grad for p in model.parameters())
    merged = dict(model.named_parameters())
    changed = [n for n in original if not torch.equal(merged[n], original[n])]
    assert changed and all("proj" in n for n in changed), changed  # only adapted linear layers changed
    if method == "ia3":
        assert {n.split(".")[-2] for n in changed} == {"k_proj", "v_proj", "down_proj"}
    model.save_pretrained(tmp_path)
    again = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert type(again).__name__ == "MistralForCausalLM"
    ids = torch.tensor([tokenizer("Bonjour le monde")["input_ids"]])
    with torch.no_grad():
        assert torch.allclose(again(ids).logits, model(ids).logits, atol=1e-5)
        assert not torch.allclose(make_model(tokenizer)(ids).logits, model(ids).logits, atol=1e-4)


@pytest.mark.slow
def test_composes_with_vocab_new_rows_head_and_adapters_body_frozen(tokenizer):
    ctx = context("strategy=vocab+lora")
    assert compose("lora+vocab").names == ["vocab", "lora"]
    model = make_model(tokenizer)
    emb0 = model.get_input_embeddings().weight.detach().clone()
    vocab = build_strategy("vocab", vocab_size=800, languages="fr", protect="en", init="mean", fertility="fr,en")
    lora = build_strategy("lora")
    model, merged = setup(vocab, model, tokenizer, ctx)
    model, merged = setup(lora, model, merged, ctx)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert any("lora_A" in n for n in trainable) and any("trainable_tokens_delta" in n for n in trainable)
    assert "lm_head.weight" in trainable, "vocab's choice (train the head) was kept"
    assert not any(n.endswith("base_layer.weight") or "norm" in n for n in trainable), "body must stay frozen"
    assert ctx.notes["adapters"]["kept_from_earlier_strategies"] > 0
    body = {n: p.detach().clone() for n, p in model.named_parameters() if "layers." in n and not p.requires_grad}
    model = train(model, merged, [vocab, lora], ctx)
    params = dict(model.named_parameters())
    assert all(bits(params[n]) == bits(p) for n, p in body.items()), "a frozen body weight moved"
    ids = torch.tensor([merged("Bonjour à tous, le gouvernement a annoncé une nouvelle loi.")["input_ids"]])
    assert int(ids.max()) >= emb0.shape[0], "the probe text uses new token ids"
    model.eval()
    with torch.no_grad():
        unmerged = model(ids).logits
    for s in reversed([vocab, lora]):  # as the pipeline tears down
        s.on_stage_end(ctx)
    assert is_plain(model)
    with torch.no_grad():  # merging LoRA and the new rows into the grown model changes no logit
        assert torch.allclose(model(ids).logits, unmerged, atol=1e-5)
    with tempfile.TemporaryDirectory() as tmp:  # and it saves and loads at the grown size (no size mismatch)
        model.save_pretrained(tmp)
        merged.save_pretrained(tmp)
        again = AutoModelForCausalLM.from_pretrained(tmp)
        with torch.no_grad():
            assert torch.allclose(again(ids).logits, unmerged, atol=1e-5)
    n_old = emb0.shape[0]
    assert bits(model.get_input_embeddings().weight[:n_old]) == bits(emb0), "old rows moved"
    q0 = make_model(tokenizer).model.layers[0].self_attn.q_proj.weight
    assert not torch.equal(model.model.layers[0].self_attn.q_proj.weight, q0), "LoRA update not merged"


def test_with_vocab_body_full_lora_freezes_the_weights_it_wraps(tokenizer):
    ctx = context("strategy=vocab+lora")
    vocab = build_strategy("vocab", vocab_size=800, languages="fr", protect="en", init="mean", fertility="none",
                           body="full")
    model, merged = setup(vocab, make_model(tokenizer), tokenizer, ctx)
    assert model.model.layers[0].self_attn.q_proj.weight.requires_grad, "vocab body=full trains the body"
    model, merged = setup(build_strategy("lora"), model, merged, ctx)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert any("lora_A" in n for n in trainable) and any("trainable_tokens_delta" in n for n in trainable)
    assert not any(n.endswith("base_layer.weight") and "embed" not in n for n in trainable), "wrapped weights train"
    assert any("norm" in n for n in trainable), "the rest of vocab's choice (the norms) is kept"


def test_vocab_body_lora_together_with_lora_is_refused_in_the_plan():
    from adaptlang.plan import make_plan

    with pytest.raises(UserError, match="'vocab' and 'lora' conflict in stage 'adapt': both own body.adapters"):
        make_plan(load_config(["strategy=vocab+lora", "strategy.vocab.body=lora", *QUICK]))
    make_plan(load_config(["strategy=vocab+lora", *QUICK]))  # vocab's body frozen: lora adds the adapters


@pytest.mark.parametrize("options, fragment", [({"method": "adalora"}, "method"), ({"r": 0}, "rank"),
                                               ({"targets": "q_proj"}, "targets"), ({"dropout": 1.5}, "dropout")])
def test_bad_options_are_user_errors(options, fragment):
    with pytest.raises(UserError, match=fragment):
        build_strategy("lora", **options)


def test_unknown_target_module_is_a_user_error(tokenizer):
    with pytest.raises(UserError, match="strategy.lora"):
        build_strategy("lora", targets=["nope_proj"]).setup_model(make_model(tokenizer), tokenizer, context())


@pytest.mark.slow
def test_vocab_plus_lora_runs_through_the_pipeline(tmp_path):
    import adaptlang

    cfg = adaptlang.load_config(["strategy=vocab+lora", f"output_dir={tmp_path}", "name=bl", *QUICK,
                                 "strategy.vocab.vocab_size=800", "strategy.vocab.fertility=none",
                                 "strategy.vocab.languages=fr", "strategy.vocab.protect=none",
                                 "eval.benchmarks=[]"])
    path = adaptlang.run(cfg)
    metrics = json.loads((path / "metrics.json").read_text())
    adapt = metrics["stages"]["adapt"]
    assert adapt["strategies"] == ["vocab", "lora"]
    assert adapt["parameters"]["trainable"] == adapt["strategy_notes"]["adapters"]["trainable_parameters"]
    assert adapt["parameters"]["trainable"] < adapt["parameters"]["total"]
    model = AutoModelForCausalLM.from_pretrained(path / adapt["model_dir"])
    assert is_plain(model)
