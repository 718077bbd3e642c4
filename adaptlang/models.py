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
from .named_models import converts
from .named_models import resolve as resolve_checkpoint

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


def tokenizer_from_config(cfg: Any, languages):
    """The tokenizer of a model built from config: sentencepiece trained on the training text of
    ``model.tokenizer.languages``, seeded by the run's seed (the same pieces every time)."""
    from .seeds import derive_seed
    from .sources import text_for

    codes = languages.resolve(cfg.model.tokenizer.get("languages", "pretraining"))
    texts, _ = text_for(codes, languages, cfg)
    lines = (t for ds in texts.values() for batch in ds.iter(batch_size=1000) for t in batch["text"])
    return train_tokenizer(lines, cfg.model.tokenizer, derive_seed(int(cfg.seed), "", "model"))


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
    model = MistralForCausalLM(config)
    free_padding_row(model, tokenizer)
    return model


FAMILIES = ("llama", "mistral", "qwen2", "gemma", "gemma2", "phi3", "gpt2", "gpt_neox", "bloom")
NOT_DECODERS = ("bert", "roberta", "xlm-roberta", "distilbert", "albert", "electra", "deberta", "deberta-v2",
                "camembert", "mpnet", "t5", "mt5", "bart", "mbart", "marian", "pegasus", "whisper")


def check_architecture(name_or_path: str, trust_remote_code: bool = False) -> None:
    """Refuse, with one line, a checkpoint that is not a decoder-only causal LM: an encoder
    (BERT), an encoder-decoder (T5), or an architecture transformers does not know."""
    from transformers import AutoConfig

    families = ", ".join(FAMILIES)
    try:
        config = AutoConfig.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    except ValueError as exc:
        first = (str(exc).splitlines() or [""])[0][:200]
        raise UserError(f"'{name_or_path}': an architecture this transformers does not know ({first}); "
                        f"adaptlang trains decoder-only causal LMs, tested on: {families}") from None
    except OSError:
        return  # not reachable here (a hub name offline): loading the model says so
    kind = getattr(config, "model_type", "?")
    if getattr(config, "is_encoder_decoder", False) or kind in NOT_DECODERS:
        what = "an encoder-decoder" if getattr(config, "is_encoder_decoder", False) else "an encoder-only model"
        raise UserError(f"'{name_or_path}' is {what} ({kind}), not a decoder-only causal LM; adaptlang trains "
                        f"decoder-only causal LMs, tested on: {families}")


def free_padding_row(model, tokenizer) -> None:
    """When the padding id is also a real token (pad == eos, as our tokenizer and Phi-3 have it),
    ``nn.Embedding(padding_idx=...)`` would keep that token's row at zero gradient forever, and
    ``_init_weights`` (used by af's resets) would zero it. The row is made an ordinary one (a
    zero row gets a fresh draw from the model's initializer range) so that it trains."""
    embedding = model.get_input_embeddings()
    pad = getattr(embedding, "padding_idx", None)
    real = {tokenizer.eos_token_id, tokenizer.bos_token_id, tokenizer.unk_token_id} - {None}
    if pad is None or pad not in real:
        return
    embedding.padding_idx = None
    with torch.no_grad():
        row = embedding.weight[pad]
        if not row.any():
            std = getattr(model.config, "initializer_range", 0.02)
            generator = torch.Generator().manual_seed(pad)
            row.copy_(torch.randn(row.shape, generator=generator) * std)


def check_model_path(name_or_path: str) -> None:
    """A local model path that does not exist or is not a transformers folder (a hub name is
    not checked here: it is looked up when loaded; a named checkpoint such as ``smollm2-135m``
    or a ``.gguf`` file is resolved by adaptlang.named_models)."""
    if converts(name_or_path):
        return
    path = Path(name_or_path)
    looks_local = path.is_absolute() or name_or_path.startswith((".", "~")) or path.exists()
    if looks_local and not path.exists():
        raise UserError(f"model path '{name_or_path}' does not exist")
    if path.is_dir() and not (path / "config.json").is_file():
        raise UserError(f"'{name_or_path}' is not a transformers model folder (no config.json)")


def load_pretrained(name_or_path: str, trust_remote_code: bool = False, tokenizer=None):
    """Any causal LM by hub name, local path, checkpoint name (adaptlang.named_models) or GGUF
    file, with its tokenizer (``tokenizer``: one already read from that path, e.g. by the
    plan). User mistakes -> UserError."""
    check_model_path(name_or_path)
    name_or_path = resolve_checkpoint(name_or_path)
    check_fits_memory(name_or_path, trust_remote_code)
    check_architecture(name_or_path, trust_remote_code)
    try:
        if tokenizer is None:
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
    free_padding_row(model, tokenizer)
    return model, tokenizer


def available_memory() -> int | None:
    """Bytes of memory this process can still take (MemAvailable), None where unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def estimated_parameters(name_or_path: str, trust_remote_code: bool = False) -> int | None:
    """Parameters of a local checkpoint, counted on the meta device from its config (nothing
    is loaded); None where the config cannot be read."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    except Exception:  # noqa: BLE001 -- an estimate only: loading reports what is wrong
        return None
    return sum(p.numel() for p in model.parameters())


def check_fits_memory(name_or_path: str, trust_remote_code: bool = False, available: int | None = None) -> None:
    """Refuse, before loading, a checkpoint whose float32 weights alone exceed the memory left
    (training needs about 4x that: weights, gradients and AdamW's two moments)."""
    if not Path(name_or_path).is_dir():
        return
    available = available_memory() if available is None else available
    n = estimated_parameters(name_or_path, trust_remote_code)
    if n is None or available is None:
        return
    if 4 * n > available:
        raise UserError(f"'{name_or_path}': {n / 1e9:.2f}B parameters need about {4 * n / 2**30:.1f} GiB in float32 "
                        f"to load (about {16 * n / 2**30:.0f} GiB to train fully), but only "
                        f"{available / 2**30:.1f} GiB of memory is free")


def check_tokenizer_matches(model, tokenizer, where: str = "model") -> None:
    rows = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > rows:
        raise UserError(
            f"{where}: the tokenizer has {len(tokenizer)} tokens but the model's embedding has only "
            f"{rows} rows: tokenizer and model do not match"
        )


def module_name(model, module) -> str | None:
    """The dotted name of ``module`` inside ``model`` (None when it is not a part of it)."""
    return next((name for name, m in model.named_modules() if m is module), None)


def head_and_body(model):
    """(LM head, body) when the logits are exactly ``head(body(...).last_hidden_state)``, so
    callers can project only the positions they need; (None, None) where that does not hold
    (no separable head, logit soft-capping, a wrapper such as DDP)."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    body = getattr(model, "base_model", None)
    if head is None or body is None or body is model or getattr(model.config, "final_logit_softcapping", None):
        return None, None
    return head, body


_PACKING: dict[tuple, bool] = {}


def packs_correctly(model, pad_id: int, segments: bool = False) -> bool:
    """Whether this model, given a packed row (position ids restarting per example and a 4-D
    block-diagonal mask, adaptlang.batching.collate_packed), computes for each example the
    logits it computes alone. Rotary and learned-position families (Llama, Mistral, Qwen2,
    Gemma, Phi-3, GPT-2, GPT-NeoX) do; BLOOM builds ALiBi from a 2-D mask and cannot take
    it, so it trains on padded rows instead. Probed once per architecture and dtype, on
    two short examples, so no family ever leaks attention across examples silently.

    ``segments``: the same, with the model's attention set to adaptlang.segment_attention
    and the row's example lengths given (the caller sets it so; this only probes it)."""
    from .batching import collate, collate_packed

    param = next(model.parameters())
    key = (type(model).__name__, param.dtype, param.device.type, segments)
    if key not in _PACKING:
        vocab = model.get_input_embeddings().weight.shape[0]
        examples = [{"input_ids": [(7 * i + 3) % vocab for i in range(n)]} for n in (5, 3)]
        tolerance = 1e-4 if param.dtype == torch.float32 else 3e-2
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                packed = collate_packed(examples, pad_id, 10, segments=segments)  # 2 tokens of padding
                packed.pop("num_tokens")
                packed.pop("labels")
                packed["attention_mask"] = packed["attention_mask"].to(param.dtype)
                logits = model(**{k: v.to(param.device) for k, v in packed.items()}).logits[0]
                ok, start = True, 0
                for e in examples:
                    alone = collate([e], pad_id)
                    ids = alone["input_ids"].to(param.device)
                    ref = model(input_ids=ids).logits[0]
                    n = len(e["input_ids"])
                    ok = ok and torch.allclose(logits[start:start + n].float(), ref.float(), atol=tolerance, rtol=tolerance)
                    start += n
        except (ValueError, RuntimeError, TypeError, IndexError):
            ok = False
        finally:
            model.train(was_training)
        _PACKING[key] = ok
    return _PACKING[key]


def attend_per_example(model, pad_id: int) -> str | None:
    """Switch ``model`` to adaptlang.segment_attention for packed training where its attention
    is transformers' SDPA and the switched model passes ``packs_correctly``; returns the
    implementation to restore afterwards (None: not switched)."""
    from . import segment_attention

    previous = getattr(model.config, "_attn_implementation", None)
    if previous != "sdpa":
        return None
    segment_attention.register()
    model.set_attn_implementation(segment_attention.NAME)
    if packs_correctly(model, pad_id, segments=True):
        return previous
    model.set_attn_implementation(previous)
    return None


def count_parameters(model) -> dict[str, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"total": total, "trainable": trainable}
