"""Decoder models and tokenizers: build a small Mistral from config, or load any causal LM.

The active-forgetting paper's base LLM is "Mistral architecture downscaled" (its Appendix A:
hidden size, heads and blocks reduced; vocabulary 32000 from sentencepiece). ``build_model``
does the same at whatever size ``configs/model/*.yaml`` asks; ``load_pretrained`` takes a
hub name or a local path of any transformers causal LM.
"""
from __future__ import annotations

import io
import tempfile
from pathlib import Path
from typing import Any, Iterable, Sequence

import sentencepiece as spm
import torch
from transformers.utils import logging as hf_logging
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaTokenizer, MistralConfig, MistralForCausalLM

from .errors import UserError

hf_logging.disable_progress_bar()  # per-file loading/saving bars are noise next to ours

ARCH_KEYS = (
    "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "max_position_embeddings", "tie_word_embeddings",
    "initializer_range", "sliding_window", "rope_theta", "rms_norm_eps",
)


def train_tokenizer(texts: Iterable[str], cfg: Any, seed: int = 0):
    """Train a sentencepiece BPE model with byte fallback (as Mistral's) and expose it as a
    transformers tokenizer (LlamaTokenizer, the class Mistral checkpoints use)."""
    model = io.BytesIO()
    try:
        _train_spm(texts, cfg, model)
    except RuntimeError as exc:
        reason = str(exc).split("] ")[-1].splitlines()[0]
        raise UserError(f"tokenizer training failed (model.tokenizer): {reason}") from None
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "tokenizer.model").write_bytes(model.getvalue())
        tokenizer = LlamaTokenizer.from_pretrained(tmp)
    tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _train_spm(texts: Sequence[str], cfg: Any, model: io.BytesIO) -> None:
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_writer=model,
        vocab_size=int(cfg.vocab_size),
        model_type=str(cfg.get("model_type", "bpe")),
        character_coverage=float(cfg.get("character_coverage", 0.9995)),
        byte_fallback=True,
        split_digits=True,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        input_sentence_size=int(cfg.get("max_sentences", 200_000)),
        shuffle_input_sentence=True,
        num_threads=max(1, torch.get_num_threads()),
        minloglevel=2,
    )


def build_model(cfg: Any, tokenizer, seed: int) -> MistralForCausalLM:
    arch = str(cfg.get("architecture", "mistral"))
    if arch != "mistral":
        raise UserError(f"model.architecture='{arch}': only 'mistral' can be built from config; "
                        "load other architectures with model.name_or_path")
    kwargs = {k: cfg[k] for k in ARCH_KEYS if cfg.get(k) is not None}
    config = MistralConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **kwargs,
    )
    torch.manual_seed(seed)
    return MistralForCausalLM(config)


def load_pretrained(name_or_path: str, trust_remote_code: bool = False):
    """Any causal LM by hub name or local path, with its tokenizer. User mistakes -> UserError."""
    path = Path(name_or_path)
    looks_local = path.is_absolute() or name_or_path.startswith((".", "~")) or path.exists()
    if looks_local and not path.exists():
        raise UserError(f"model path '{name_or_path}' does not exist")
    if path.is_dir() and not (path / "config.json").is_file():
        raise UserError(f"'{name_or_path}' is not a transformers model folder (no config.json)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    except ValueError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"'{name_or_path}' is not a causal language model: {first[:300]}") from None
    except OSError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"cannot load model '{name_or_path}' (no network at run time?): {first[:300]}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    check_tokenizer_matches(model, tokenizer, name_or_path)
    return model, tokenizer


def check_tokenizer_matches(model, tokenizer, where: str = "model") -> None:
    rows = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > rows:
        raise UserError(
            f"{where}: the tokenizer has {len(tokenizer)} tokens but the model's embedding has only "
            f"{rows} rows: tokenizer and model do not match"
        )


def head_and_body(model):
    """(LM head, body) when the logits are exactly ``head(body(...).last_hidden_state)``, so
    callers can project only the positions they need; (None, None) where that does not hold
    (no separable head, logit soft-capping, a wrapper such as DDP)."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    body = getattr(model, "base_model", None)
    if head is None or body is None or body is model or getattr(model.config, "final_logit_softcapping", None):
        return None, None
    return head, body


def count_parameters(model) -> dict[str, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"total": total, "trainable": trainable}
