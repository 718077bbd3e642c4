"""Tiny random-weight checkpoints of eight decoder families, each with a tokenizer of its
family's real kind, trained in-process on vendored text and saved with save_pretrained.

* sentencepiece BPE with byte fallback (llama, mistral, gemma, phi3): adaptlang's own
  tokenizer trainer (the kind Llama 2 / Mistral / Gemma / Phi-3 checkpoints ship);
* byte-level BPE (gpt2, qwen2, gpt_neox, bloom): the ``tokenizers`` library, as GPT-2 /
  Qwen2 / Pythia / BLOOM ship.

Family traits kept: qwen2, gemma, gpt2 and bloom tie the LM head; gpt_neox does not; gemma
scales its embeddings; gpt2 learns absolute positions; bloom uses ALiBi; phi3 has added chat
tokens and pad == eos.
"""
from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import OmegaConf

from adaptlang.languages import CORPORA
from adaptlang.models import train_tokenizer
from adaptlang.sources import read_text

FAMILIES = ("llama", "mistral", "qwen2", "gemma", "phi3", "gpt2", "gpt_neox", "bloom")
SENTENCEPIECE = ("llama", "mistral", "gemma", "phi3")
PHI3_CHAT = ["<|user|>", "<|assistant|>", "<|system|>", "<|end|>"]
DIM = dict(hidden=32, layers=1, heads=4, inter=64, positions=256)


def _texts() -> list[str]:
    out = []
    for name in ("eng-US", "fra", "rus", "nld", "deu", "jpn"):
        out += read_text(str(CORPORA / "ntrex128" / f"{name}.txt.gz"), 150)
    return out


def byte_level_tokenizer(vocab_size: int = 700):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_texts(), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>",
                                   pad_token="<|endoftext|>", unk_token="<|endoftext|>")


def sentencepiece_tokenizer(family: str):
    tokenizer = train_tokenizer(_texts(), OmegaConf.create({"vocab_size": 700, "character_coverage": 0.99}), seed=0)
    if family == "phi3":
        tokenizer.add_special_tokens({"additional_special_tokens": PHI3_CHAT})
        tokenizer.chat_template = ("{% for m in messages %}{{ '<|' + m['role'] + '|>\\n' + m['content'] + '<|end|>\\n' }}"
                                   "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}")
    return tokenizer


def model_config(family: str, tokenizer):
    import transformers as tf

    d, n = DIM, len(tokenizer)
    ids = dict(vocab_size=n, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
               pad_token_id=tokenizer.pad_token_id)
    rope = dict(hidden_size=d["hidden"], num_hidden_layers=d["layers"], num_attention_heads=d["heads"],
                intermediate_size=d["inter"], max_position_embeddings=d["positions"])
    if family == "llama":
        return tf.LlamaConfig(**ids, **rope, num_key_value_heads=2, tie_word_embeddings=False)
    if family == "mistral":
        return tf.MistralConfig(**ids, **rope, num_key_value_heads=2, tie_word_embeddings=False)
    if family == "qwen2":
        return tf.Qwen2Config(**ids, **rope, num_key_value_heads=2, tie_word_embeddings=True)
    if family == "gemma":
        return tf.GemmaConfig(**ids, **rope, num_key_value_heads=1, head_dim=8, tie_word_embeddings=True)
    if family == "phi3":
        return tf.Phi3Config(**ids, **rope, num_key_value_heads=2, tie_word_embeddings=False)
    if family == "gpt2":
        return tf.GPT2Config(**ids, n_embd=d["hidden"], n_layer=d["layers"], n_head=d["heads"],
                             n_positions=d["positions"], tie_word_embeddings=True)
    if family == "gpt_neox":
        return tf.GPTNeoXConfig(**ids, **rope, tie_word_embeddings=False)
    if family == "bloom":
        return tf.BloomConfig(**ids, hidden_size=d["hidden"], n_layer=d["layers"], n_head=d["heads"],
                              tie_word_embeddings=True)
    raise ValueError(family)


def build_family(family: str, folder: Path) -> Path:
    """Save a tiny ``family`` model and its tokenizer under ``folder`` (returned)."""
    from transformers import AutoModelForCausalLM

    tokenizer = sentencepiece_tokenizer(family) if family in SENTENCEPIECE else byte_level_tokenizer()
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(model_config(family, tokenizer))
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
