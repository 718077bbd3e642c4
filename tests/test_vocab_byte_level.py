"""vocab on a byte-level BPE base (the GPT-2 / Qwen / Llama 3 kind): every vendored text of the
old languages tokenizes exactly as before, the merged tokenizer reloads with AutoTokenizer with
its special tokens, added tokens and chat template, and only the new rows (and the head) train."""
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from adaptlang import load_config
from adaptlang.strategies.vocab import merge as vm
from adaptlang.composition import build_strategy

from conftest import QUICK, bits, stage_ctx
from families import byte_level_tokenizer, model_config
from test_vocab import train, vendored_texts, weights

CHAT = ["<|im_start|>", "<|im_end|>"]
TEMPLATE = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
            "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
CONVERSATION = [{"role": "user", "content": "Translate: good morning"}, {"role": "assistant", "content": "Bonjour"}]


def qwen_like_tokenizer():
    """A byte-level BPE with Qwen-style chat tokens added after the BPE vocabulary, and a chat template."""
    tokenizer = byte_level_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": CHAT})
    tokenizer.chat_template = TEMPLATE
    return tokenizer


def model_for(family: str, tokenizer):
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(model_config(family, tokenizer))


@pytest.fixture(scope="module")
def expanded():
    """qwen2 (tied head) with a byte-level base, expanded on the adapting languages and
    protecting the 12 pretraining languages (the default pairing)."""
    base = qwen_like_tokenizer()
    ctx = stage_ctx("adapt", 1, config=load_config(["strategy=vocab", *QUICK, "data.max_lines_per_language=150"]))
    model = model_for("qwen2", base)
    before = model.get_input_embeddings().weight.detach().clone()
    strategy = build_strategy("vocab", vocab_size=3000, fertility="pretraining,adapting")
    model, merged = strategy.setup_model(model, base, ctx)
    ctx.model, ctx.tokenizer = model, merged
    return {"base": base, "merged": merged, "model": model, "strategy": strategy, "ctx": ctx, "before": before}


def test_the_base_is_byte_level_and_the_merge_adds_tokens(expanded):
    assert vm.tokenizer_kind(vm.base_bpe(expanded["base"])) == "byte-level"
    notes = expanded["ctx"].notes["vocab"]
    assert notes["added_tokens"] > 100 and len(expanded["merged"]) == len(expanded["base"]) + notes["added_tokens"]
    assert notes["first_new_id"] == len(expanded["base"])  # after the BPE vocabulary and the added chat tokens


def test_every_vendored_old_language_sentence_tokenizes_as_before(expanded):
    base, merged = expanded["base"], expanded["merged"]
    checked = 0
    for code in expanded["ctx"].languages.resolve("pretraining"):
        texts = vendored_texts(code)  # NTREX, FLORES-200 devtest, UDHR
        old = [e.ids for e in base.backend_tokenizer.encode_batch(texts)]
        new = [e.ids for e in merged.backend_tokenizer.encode_batch(texts)]
        differ = [texts[i][:60] for i, (a, b) in enumerate(zip(old, new)) if a != b]
        assert not differ, f"{code}: {len(differ)} texts tokenize differently, e.g. {differ[:2]}"
        checked += len(texts)
    assert checked > 12 * 2500


def test_without_protection_old_text_would_change(expanded):
    """The protection step is what keeps the old languages exact here too (the test above can fail)."""
    ctx = expanded["ctx"]
    texts = [t for c in ("fr", "pt", "nl", "da") for t in vendored_texts(c)[:400]]
    new = vm.train_new_vocabulary(texts, 2000, like=expanded["base"])
    data, _ = vm.merge_vocabularies(expanded["base"], new, [], len(expanded["base"]))
    unprotected = vm.to_transformers(expanded["base"], data)
    assert vm.changed_texts(expanded["base"], unprotected, vendored_texts("en")[:800]), ctx.stage


def test_new_languages_get_new_ids_and_lower_fertility(expanded):
    fert = expanded["ctx"].notes["vocab"]["fertility"]
    for code in ("th", "ko"):  # scripts the base tokenizer never saw: bytes only
        assert fert[code]["after"]["tokens_per_char"] < 0.8 * fert[code]["before"]["tokens_per_char"], code
    for code in expanded["ctx"].languages.resolve("pretraining"):
        assert fert[code]["before"] == fert[code]["after"], code
    ids = expanded["merged"]("สวัสดีครับ ยินดีต้อนรับ")["input_ids"]
    assert any(i >= len(expanded["base"]) for i in ids)


def test_saves_and_reloads_with_special_tokens_added_tokens_and_chat_template(expanded, tmp_path):
    base, merged = expanded["base"], expanded["merged"]
    merged.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert len(again) == len(merged)
    for name in ("eos_token_id", "bos_token_id", "pad_token_id", "unk_token_id"):
        assert getattr(again, name) == getattr(base, name), name
    assert all(again.convert_tokens_to_ids(t) == base.convert_tokens_to_ids(t) for t in CHAT)
    assert again.chat_template == base.chat_template
    chat_old = base.apply_chat_template(CONVERSATION, tokenize=False)
    assert again.apply_chat_template(CONVERSATION, tokenize=False) == chat_old
    assert again(chat_old, add_special_tokens=False)["input_ids"] == base(chat_old, add_special_tokens=False)["input_ids"]
    texts = vendored_texts("th")[:50] + vendored_texts("fr")[:50]
    assert again(texts)["input_ids"] == merged(texts)["input_ids"]
    assert [again.decode(ids) for ids in again(texts, add_special_tokens=False)["input_ids"]] == texts


def test_subword_mean_rows_are_the_mean_of_the_base_pieces(expanded):
    """A new piece's row is the mean of the base rows its bytes tokenize to with the base BPE."""
    base, merged, before = expanded["base"], expanded["merged"], expanded["before"]
    emb, _ = weights(expanded["model"])
    n_old = before.shape[0]
    assert bits(emb[:n_old]) == bits(before)
    pieces = {i: p for p, i in merged.get_vocab().items() if i >= n_old}
    checked = 0
    for i, piece in pieces.items():
        text = merged.convert_tokens_to_string([piece])
        if "\ufffd" in text or len(base.backend_tokenizer.pre_tokenizer.pre_tokenize_str(text)) != 1:
            continue  # part of a UTF-8 character, or text the pre-tokenizer would split: no plain-text route
        old_ids = base(text, add_special_tokens=False)["input_ids"]
        assert torch.allclose(emb[i], before[old_ids].mean(0), atol=1e-6), piece
        checked += 1
    assert checked > 0.5 * len(pieces)


@pytest.mark.parametrize("family, head", [("gpt2", "all"), ("gpt_neox", "new")])
def test_old_rows_stay_bit_identical_and_only_new_rows_train(family, head):
    base = qwen_like_tokenizer()
    ctx = stage_ctx("adapt", 1, config=load_config(["strategy=vocab", *QUICK]))
    model = model_for(family, base)
    old_emb = model.get_input_embeddings().weight.detach().clone()
    old_head = model.get_output_embeddings().weight.detach().clone()
    strategy = build_strategy("vocab", vocab_size=800, languages="fr", protect="en", init="mean", head=head,
                              fertility="none")
    model, merged = strategy.setup_model(model, base, ctx)
    ctx.model, ctx.tokenizer = model, merged
    emb0 = weights(model)[0].clone()
    model = train(model, merged, strategy, ctx)
    n_old = old_emb.shape[0]
    emb, out = model.get_input_embeddings().weight.detach(), model.get_output_embeddings().weight.detach()
    assert bits(emb[:n_old]) == bits(old_emb), "old embedding rows moved"
    assert not torch.equal(emb[n_old:], emb0[n_old:]), "new embedding rows did not train"
    if head == "new":  # gpt_neox: untied head, only its new rows train
        assert bits(out[:n_old]) == bits(old_head)
    else:  # gpt2 ties the head to the embedding: its old rows are the frozen embedding rows
        assert out is emb or torch.equal(out, emb)
