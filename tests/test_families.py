"""Real decoder families (issue #19): llama, mistral, qwen2, gemma, phi3, gpt2, gpt_neox, bloom,
each a tiny random-weight checkpoint with a tokenizer of its family's kind (tests/families.py),
loaded with ``model=pretrained model.name_or_path=DIR`` as a user's checkpoint is."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import adaptlang
from adaptlang import load_config
from adaptlang.batching import collate, collate_packed
from adaptlang.cli import main as cli_main
from adaptlang.models import load_pretrained, packs_correctly

from conftest import QUICK
from families import FAMILIES, PHI3_CHAT, build_family

RUN = [q for q in QUICK if not q.startswith("model.")]


@pytest.fixture(scope="module")
def family_dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("families")
    return {f: build_family(f, root / f) for f in FAMILIES}


@pytest.fixture(scope="module")
def languages(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("langs") / "small.yaml"
    path.write_text("classes:\n  pretraining: [en, fr]\n  adapting: [nl, de]\n  other: [sv]\n")
    return str(path)


def examples_for(tokenizer) -> list[dict]:
    texts = ["The cat sat on the mat.", "Bonjour, comment allez-vous ?", "Een korte zin."]
    out = []
    for t in texts:
        ids = tokenizer(t, add_special_tokens=False)["input_ids"][:12]
        out.append({"input_ids": ids, "labels": ids})
    return out


def per_example_losses(model, batch, spans) -> list[float]:
    with torch.no_grad():
        logits = model(**batch).logits[0]
    labels = batch["labels"][0]
    return [float(F.cross_entropy(logits[s:e - 1], labels[s + 1:e])) for s, e in spans]


@pytest.mark.parametrize("family", FAMILIES)
def test_packing_keeps_each_example_as_alone_or_is_switched_off(family, family_dirs):
    model, tokenizer = load_pretrained(str(family_dirs[family]))
    model.eval()
    examples = examples_for(tokenizer)
    pad = tokenizer.pad_token_id
    alone = []
    for e in examples:
        b = collate([e], pad)
        b.pop("num_tokens")
        alone += per_example_losses(model, b, [(0, len(e["input_ids"]))])
    spans, start = [], 0
    for e in sorted(examples, key=lambda e: -len(e["input_ids"])):  # collate_packed's first-fit-decreasing order
        spans.append((start, start + len(e["input_ids"])))
        start += len(e["input_ids"])
    order = sorted(range(len(examples)), key=lambda i: -len(examples[i]["input_ids"]))
    expected = [alone[i] for i in order]
    # the same row with a plain causal mask mixes the examples: the comparison can fail
    plain = collate([{"input_ids": sum((examples[i]["input_ids"] for i in order), []),
                      "labels": sum((examples[i]["labels"] for i in order), [])}], pad)
    plain.pop("num_tokens")
    mixed = per_example_losses(model, plain, spans)
    if family == "bloom":  # ALiBi from a 2-D mask: packing is switched off, rows are padded
        assert not packs_correctly(model, pad)
        return
    assert max(abs(a - b) for a, b in zip(mixed[1:], expected[1:])) > 1e-3
    assert packs_correctly(model, pad)
    packed = collate_packed(examples, pad, 64)
    packed.pop("num_tokens")
    got = per_example_losses(model, packed, spans)
    assert got == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_lora_and_ia3_find_their_targets_on_every_family(family, family_dirs):
    from adaptlang.composition import build_strategy
    from adaptlang.stage_runner import model_shape, restore_ownership

    from conftest import stage_ctx

    for method, marker in (("lora", "lora_"), ("ia3", "ia3_l")):
        model, tokenizer = load_pretrained(str(family_dirs[family]))
        before = model_shape(model)
        strategy = build_strategy("lora", method=method)
        model, _ = strategy.setup_model(model, tokenizer, stage_ctx("adapt", 1, tokenizer=tokenizer, model=model))
        trainable = [n for n, p in model.named_parameters() if p.requires_grad]
        assert trainable and all(marker in n for n in trainable), (family, method)
        strategy.on_stage_end(stage_ctx("adapt", 1, tokenizer=tokenizer, model=model))
        restore_ownership(model, before, [strategy], "adapt")


def test_af_leaves_no_row_that_can_never_train_when_pad_is_eos(family_dirs):
    from adaptlang.strategies.af import reset_embeddings

    model, tokenizer = load_pretrained(str(family_dirs["phi3"]))
    eos = tokenizer.eos_token_id
    assert tokenizer.pad_token_id == eos and model.get_input_embeddings().padding_idx is None
    optimizer = torch.optim.AdamW(model.parameters())
    reset_embeddings(model, optimizer, seed=0)
    row = model.get_input_embeddings().weight[eos]
    assert row.abs().sum() > 0  # not zeroed as a padding row
    ids = torch.tensor([[5, 9, eos, 11]])
    model(input_ids=ids, labels=ids).loss.backward()
    assert model.get_input_embeddings().weight.grad[eos].abs().sum() > 0  # and it trains


def run(family, family_dirs, languages, out, strategy, *extra):
    # experiment=default: the from-scratch pipeline's three stages on a trained checkpoint (which
    # otherwise gets experiment=pretrained, adaptlang.config.TRAINED_DEFAULTS)
    cfg = load_config(["model=pretrained", f"model.name_or_path={family_dirs[family]}", f"strategy={strategy}",
                       "experiment=default", *RUN, f"languages={languages}", f"output_dir={out}", *extra])
    return adaptlang.run(cfg)


SMALL = ["strategy.replay.size=16", "strategy.xling.max_pairs=12", "strategy.xling.bitext=[flores]"]


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_every_strategy_kill_and_resume_and_eval_on_each_family(family, family_dirs, languages, tmp_path):
    """af+xling+replay+lwf and (vocab+)lora+mlm+ewc+si+agem: all ten built-in strategies."""
    first = "af+xling+replay+lwf"
    reference = run(family, family_dirs, languages, tmp_path / "a", first, *SMALL, "train.checkpoint_every=1")
    metrics = json.loads((reference / "metrics.json").read_text())
    # a trained checkpoint's starting model is evaluated first, as stage base (eval.base: auto)
    assert metrics["status"] == "complete" and list(metrics["stages"]) == ["base", "pretrain", "adapt", "instruct"]
    assert metrics["forgetting"]["baseline"] == "base"
    packing = {s["train"]["packing"] for s in metrics["stages"].values() if "train" in s}
    assert packing == ({"padding"} if family == "bloom" else {"per-example attention + per-example positions"})
    # kill in the instruct stage, resume: bit for bit the uninterrupted run
    from adaptlang.strategy import STRATEGIES, Strategy, register_strategy

    class Kill(Strategy):
        stages = ("instruct",)

        def on_step_end(self, state):
            if state.step == 2:
                raise KeyboardInterrupt

    register_strategy("_kill")(Kill)
    try:
        with pytest.raises(KeyboardInterrupt):
            run(family, family_dirs, languages, tmp_path / "b", first + "+_kill", *SMALL, "train.checkpoint_every=1",
                f"name={reference.name}")
        Kill.on_step_end = lambda self, state: None
        folder = tmp_path / "b" / reference.name
        resumed = adaptlang.pipeline.run(load_config([f"output_dir={tmp_path / 'b'}", f"name={reference.name}"],
                                                     base=folder / "config.yaml"), resume=True)
    finally:
        STRATEGIES.unregister("_kill")
    from safetensors.torch import load_file

    a = load_file(str(reference / "stages/instruct/model/model.safetensors"))
    b = load_file(str(resumed / "stages/instruct/model/model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # adaptlang eval on the saved model
    assert cli_main(["eval", str(reference / "stages/instruct/model"), *RUN, f"languages={languages}",
                     "--out", str(tmp_path / "eval.json")]) == 0
    assert json.loads((tmp_path / "eval.json").read_text())["stages"]["eval"]["eval"]["perplexity"]["classes"]
    # vocab on every tokenizer kind: sentencepiece-style (llama, mistral, gemma, phi3) and byte-level BPE
    second = "vocab+lora+mlm+ewc+si+agem"
    extra = ["strategy.vocab.vocab_size=1200", "strategy.vocab.character_coverage=0.99",
             "strategy.vocab.protect=en", "strategy.vocab.fertility=none", "strategy.vocab.body=full"]
    path = run(family, family_dirs, languages, tmp_path / "c", second, "strategy.mlm.max_sentences=12",
               "strategy.ewc.fisher_batches=1", *extra)
    metrics = json.loads((path / "metrics.json").read_text())
    assert metrics["status"] == "complete"
    assert metrics["stages"]["adapt"]["strategy_notes"]["vocab"]["added_tokens"] > 0
    check_special_tokens_survive(family_dirs[family], path / "stages/adapt/model")


def check_special_tokens_survive(base_dir: Path, merged_dir: Path) -> None:
    from transformers import AutoTokenizer

    base, merged = AutoTokenizer.from_pretrained(base_dir), AutoTokenizer.from_pretrained(merged_dir)
    assert len(merged) > len(base)
    for name in ("eos_token_id", "bos_token_id", "pad_token_id", "unk_token_id"):
        assert getattr(merged, name) == getattr(base, name), name
    assert {t: i for t, i in merged.added_tokens_encoder.items()} == base.added_tokens_encoder
    config = json.loads((merged_dir / "config.json").read_text())
    assert config["eos_token_id"] == merged.eos_token_id and config["vocab_size"] >= len(merged)
    generation = merged_dir / "generation_config.json"
    if generation.is_file():
        assert json.loads(generation.read_text()).get("eos_token_id") in (None, merged.eos_token_id)
    text = "<|user|>\nHi there<|end|>\n<|assistant|>\nHello<|end|>\n" if base.chat_template else "Hello there."
    assert merged(text)["input_ids"] == base(text)["input_ids"]
    if base.chat_template:
        assert all(merged.convert_tokens_to_ids(t) == base.convert_tokens_to_ids(t) for t in PHI3_CHAT)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_bf16_and_gradient_checkpointing_run_on_cpu(family, family_dirs, languages, tmp_path):
    path = run(family, family_dirs, languages, tmp_path, "af", "mixed_precision=bf16", "device=cpu",
               "train.gradient_checkpointing=true")
    metrics = json.loads((path / "metrics.json").read_text())
    assert metrics["status"] == "complete"
    assert all(s["train"]["final_loss"] == s["train"]["final_loss"]  # finite
               for s in metrics["stages"].values() if "train" in s)


def test_instruction_examples_use_the_chat_template_with_loss_on_the_reply(family_dirs):
    from adaptlang.instructions import encode_all

    _, tokenizer = load_pretrained(str(family_dirs["phi3"]))
    example = {"prompt": "Translate to French: good morning", "target": "bonjour"}
    chat = encode_all([example], tokenizer, 64)[0]
    plain = encode_all([example], tokenizer, 64, chat_template=False)[0]
    user, assistant, end = (tokenizer.convert_tokens_to_ids(t) for t in ("<|user|>", "<|assistant|>", "<|end|>"))
    assert chat["input_ids"][0] == user and assistant in chat["input_ids"] and user not in plain["input_ids"]
    labelled = [t for t, lab in zip(chat["input_ids"], chat["labels"]) if lab != -100]
    assert tokenizer.decode(labelled).startswith("bonjour") and end in labelled  # the reply and its end of turn
    assert assistant not in labelled  # the prompt, template included, carries no loss


@pytest.mark.parametrize("family", FAMILIES)
def test_growing_the_vocabulary_matches_resize_token_embeddings(family, family_dirs):
    """vocab grows the matrices itself (no random fill of the whole new matrix): with the same
    new rows, the model computes what transformers' resize_token_embeddings gives, and saves
    the same keys and config."""
    from transformers import AutoModelForCausalLM

    from adaptlang.strategies.vocab.merge import grow_embeddings

    ours, theirs = (AutoModelForCausalLM.from_pretrained(family_dirs[family]).eval() for _ in range(2))
    n = ours.get_input_embeddings().weight.shape[0]
    theirs.resize_token_embeddings(n + 7, mean_resizing=False)
    grow_embeddings(ours, n + 7)
    for model in (ours, theirs):
        emb, head = model.get_input_embeddings(), model.get_output_embeddings()
        with torch.no_grad():
            emb.weight[n:] = torch.linspace(-0.1, 0.1, 7)[:, None]
            if head.weight is not emb.weight:
                head.weight[n:] = 0.05
    assert (ours.get_output_embeddings().weight is ours.get_input_embeddings().weight) == \
        (theirs.get_output_embeddings().weight is theirs.get_input_embeddings().weight)
    ids = torch.tensor([[1, 2, 3, n + 1, n + 6, 4]])
    assert torch.allclose(ours(ids).logits, theirs(ids).logits, atol=1e-6)
    assert ours.config.vocab_size == theirs.config.vocab_size == n + 7
    assert set(ours.state_dict()) == set(theirs.state_dict())
