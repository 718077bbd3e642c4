"""Vocabulary expansion helpers: learn a new-language sentencepiece BPE model, merge it into a
base tokenizer so that protected (old-language) text tokenizes exactly as before, resize and
initialize the embedding rows, and measure token fertility.

Active-forgetting paper, section 3: "a new vocabulary V' is learned over [the new languages'
corpus] and merged with V to form a larger vocabulary" (Appendix A: 32000 + 16000). The
paper does not say how the merge is done. Sentencepiece has no merge operation and the
scores of two models trained on different corpora are incomparable,
so we merge at the level of the BPE model that the transformers tokenizer runs
(``tokenizer.json``):

* the base vocabulary and merges keep their ids and their order; new pieces get ids after
  every existing id (and after every existing embedding row), new merges are appended after
  every old merge, in the new model's order;
* BPE applies the lowest-ranked applicable merge first, so on any text the old merges fire
  exactly as before, and a new merge can only fire once no old merge applies. Its result is
  a new piece, and new pieces are only ever merged into new pieces, so *a text tokenizes as
  before if and only if its tokenization contains no new id*;
* appended merges can still fire on old-language text (an English word that the new
  vocabulary holds whole, a character the base tokenizer encoded as bytes). To keep the old
  languages exactly as they were, every new piece that appears in the tokenization of the
  protected text (all vendored text of the protected languages) is removed, with the pieces
  that can only be built from it, until none appears. Removed pieces are counted in the
  notes (``dropped_for_old_languages``).

Supported base tokenizers (``tokenizer_kind``): sentencepiece-style BPE in ``tokenizers`` (word
boundary ``▁``, byte fallback: Llama 2, Mistral, Gemma, Phi-3 and the built-in tokenizer), whose
new model sentencepiece learns, and byte-level BPE (GPT-2, Qwen2, Llama 3, GPT-NeoX, BLOOM), whose
new model the ``tokenizers`` BPE trainer learns through the base's own pre-tokenizer. The merge
argument above holds for both, since both run the same BPE model over their alphabet (with
``ignore_merges``, as Llama 3 sets it, a pre-token that is a whole new piece gets its new id,
which the protection check sees). Unigram and WordPiece tokenizers, BPE with dropout or subword
affixes, and slow-only tokenizers are refused with a UserError.
"""
from __future__ import annotations

import io
import json
import re
import tempfile
from pathlib import Path
from typing import Iterable, Sequence

import sentencepiece as spm
import torch
from tokenizers import Tokenizer
from transformers import AutoTokenizer, LlamaTokenizer

from ...errors import UserError

BYTE_PIECE = re.compile(r"^<0x[0-9A-Fa-f]{2}>$")
SPECIAL_PIECES = {"<unk>", "<s>", "</s>", "<pad>"}


# --- the new-language sentencepiece model -------------------------------------------------

def train_new_vocabulary(texts: Sequence[str], vocab_size: int, character_coverage: float = 0.9995,
                         like=None) -> dict:
    """Learn the new languages' BPE model of the same kind as the base tokenizer ``like``
    (sentencepiece-style when ``like`` is None); return ``{"vocab": {piece: id}, "merges":
    [[a, b], ...]}``, as the ``tokenizers`` BPE model holds it."""
    if like is not None and tokenizer_kind(base_bpe(like)) == "byte-level":
        return train_byte_level(texts, vocab_size, like)
    return train_sentencepiece(texts, vocab_size, character_coverage)


def train_sentencepiece(texts: Sequence[str], vocab_size: int, character_coverage: float = 0.9995) -> dict:
    """Train a sentencepiece BPE model on the new languages' text; return its BPE model as
    transformers converts it.

    ``vocab_size`` is a soft limit (``hard_vocab_limit=false``): small corpora give fewer pieces.
    Sentencepiece takes no seed; training is deterministic while the text has fewer than
    ``input_sentence_size`` sentences (no sampling).
    """
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(texts), model_writer=model, vocab_size=int(vocab_size), model_type="bpe",
            character_coverage=float(character_coverage), byte_fallback=True, split_digits=True,
            hard_vocab_limit=False, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
            input_sentence_size=500_000, shuffle_input_sentence=True, seed_sentencepiece_size=1_000_000,
            num_threads=max(1, torch.get_num_threads()), minloglevel=2,
        )
    except RuntimeError as exc:
        reason = str(exc).split("] ")[-1].splitlines()[0]
        raise UserError(f"strategy.vocab: training the new sentencepiece model failed: {reason.split(' Increase')[0]} "
                        "(raise strategy.vocab.vocab_size or lower strategy.vocab.character_coverage)") from None
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "tokenizer.model").write_bytes(model.getvalue())
        tokenizer = LlamaTokenizer.from_pretrained(tmp)
    bpe = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
    return {"vocab": bpe["vocab"], "merges": [_pair(m) for m in bpe["merges"]]}


def train_byte_level(texts: Sequence[str], vocab_size: int, like) -> dict:
    """Train a byte-level BPE model (GPT-2 / Qwen / Llama 3 kind) with the ``tokenizers``
    library on the new languages' text, through the base tokenizer's own normalizer and
    pre-tokenizer (its split regex and byte-to-unicode mapping), so that its pieces and merges
    live in the base model's alphabet. The trainer is deterministic (no sampling, no seed)."""
    from tokenizers import models, pre_tokenizers, trainers

    backend = like.backend_tokenizer
    learner = Tokenizer(models.BPE())
    learner.normalizer = backend.normalizer
    learner.pre_tokenizer = backend.pre_tokenizer
    trainer = trainers.BpeTrainer(vocab_size=int(vocab_size), show_progress=False, special_tokens=[],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    learner.train_from_iterator(list(texts), trainer)
    bpe = json.loads(learner.to_str())["model"]
    return {"vocab": bpe["vocab"], "merges": [_pair(m) for m in bpe["merges"]]}


def learnable_pieces_bound(texts: Iterable[str]) -> int:
    """An upper bound on the pieces any BPE model (either kind) can hold when learned on
    ``texts``: 256 bytes and 3 specials, the distinct characters, and one merge per byte of
    each distinct whitespace word (a word of n symbols allows at most n - 1 merges; the
    word-boundary symbol adds one). Cheap enough for the plan to refuse a corpus far too small
    for the asked ``vocab_size`` before anything trains; the exact count is checked after the
    new model is learned."""
    words: set[str] = set()
    chars: set[str] = set()
    for text in texts:
        words.update(text.split())
        chars.update(text)
    return 259 + len(chars) + sum(len(w.encode("utf-8")) for w in words)


def _pair(merge) -> tuple[str, str]:
    if isinstance(merge, str):
        a, b = merge.split(" ", 1)
        return a, b
    return merge[0], merge[1]


# --- the merge ----------------------------------------------------------------------------

def base_bpe(tokenizer) -> dict:
    """The base tokenizer's tokenizers JSON, checked to be a BPE kind we can extend
    (``tokenizer_kind``); any other kind is a UserError naming the supported ones."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise UserError(f"strategy.vocab: the base tokenizer ({type(tokenizer).__name__}) is a slow tokenizer with no "
                        f"tokenizers backend; vocabulary expansion needs a fast BPE tokenizer ({SUPPORTED})")
    data = json.loads(backend.to_str())
    model = data["model"]
    if model.get("type") != "BPE":
        raise UserError(f"strategy.vocab: the base tokenizer is {model.get('type')}, not BPE; vocabulary "
                        f"expansion supports {SUPPORTED}")
    if model.get("dropout") or model.get("continuing_subword_prefix") or model.get("end_of_word_suffix"):
        raise UserError("strategy.vocab: the base BPE tokenizer uses dropout or subword affixes; not supported "
                        f"(supported: {SUPPORTED})")
    tokenizer_kind(data)
    return data


SUPPORTED = "sentencepiece-style BPE (Llama 2, Mistral, Gemma, Phi-3) and byte-level BPE (GPT-2, Qwen, Llama 3)"


def tokenizer_kind(data: dict) -> str:
    """``"byte-level"`` (a ByteLevel pre-tokenizer: GPT-2, Qwen2, Llama 3, GPT-NeoX, BLOOM) or
    ``"sentencepiece"`` (word boundary ``\u2581`` in the pieces: Llama 2, Mistral, Gemma)."""
    if "ByteLevel" in json.dumps(data.get("pre_tokenizer")):
        return "byte-level"
    if any(p.startswith("\u2581") for p in data["model"]["vocab"]):
        return "sentencepiece"
    raise UserError(f"strategy.vocab: the base BPE tokenizer is neither byte-level nor sentencepiece-style (no "
                    f"ByteLevel pre-tokenizer, no '\u2581' pieces); vocabulary expansion supports {SUPPORTED}")


def candidate_pieces(base: dict, new: dict) -> tuple[list[str], list[tuple[str, str]]]:
    """New pieces (new model's order) not in the base vocabulary, and the new model's merges
    that build them. Special and byte pieces are skipped (the base has its own)."""
    old = base["model"]["vocab"]
    pieces = [p for p, _ in sorted(new["vocab"].items(), key=lambda kv: kv[1])
              if p not in old and p not in SPECIAL_PIECES and not BYTE_PIECE.match(p)]
    wanted = set(pieces)
    return pieces, [(a, b) for a, b in new["merges"] if a + b in wanted]


def reachable(pieces: Iterable[str], merges: Sequence[tuple[str, str]], old: dict) -> tuple[list[str], list[tuple[str, str]]]:
    """Keep the pieces BPE can produce (single characters, or a merge of producible pieces)
    and the merges whose parts and result are kept."""
    pieces = list(pieces)
    keep = {p for p in pieces if len(p) == 1}
    usable = set(pieces)
    changed = True
    while changed:
        changed = False
        for a, b in merges:
            result = a + b
            if result in usable and result not in keep and (a in old or a in keep) and (b in old or b in keep):
                keep.add(result)
                changed = True
    kept_merges = [(a, b) for a, b in merges if a + b in keep and (a in old or a in keep) and (b in old or b in keep)]
    return [p for p in pieces if p in keep], kept_merges


def build(base: dict, pieces: Sequence[str], merges: Sequence[tuple[str, str]], start: int,
          old_merges: Sequence[tuple[str, str]] | None = None) -> dict:
    """The merged tokenizers JSON: old vocab and merges first, new ids from ``start``
    (``old_merges``: the base's merges as pairs, when the caller has them already)."""
    model = {**base["model"], "vocab": dict(base["model"]["vocab"])}  # the rest of ``base`` is not changed
    data = {**base, "model": model}
    if old_merges is None:
        old_merges = [_pair(m) for m in model["merges"]]
    # Added tokens (chat tokens, a pad token) may sit between the BPE vocabulary and ``start``;
    # listing them in the vocabulary at their own ids keeps the ids contiguous, so a tokenizer
    # rebuilt from vocab + merges cannot renumber them (their rows hold trained embeddings).
    for token in data.get("added_tokens", []):
        if token["content"] not in model["vocab"] and token["id"] < start:
            model["vocab"][token["content"]] = token["id"]
    for i, piece in enumerate(pieces):
        model["vocab"][piece] = start + i
    model["merges"] = [*old_merges, *merges]
    return data


def merge_vocabularies(tokenizer, new: dict, protected: Sequence[str], start: int,
                       max_rounds: int = 100) -> tuple[dict, dict]:
    """Merge ``new`` (from train_new_vocabulary) into ``tokenizer``'s BPE model.

    Returns (merged tokenizers JSON, stats). ``protected`` texts tokenize exactly as with the
    base tokenizer: new pieces found in their tokenization are removed until none is left.
    """
    base = base_bpe(tokenizer)
    old = base["model"]["vocab"]
    candidates, cand_merges = candidate_pieces(base, new)
    pieces, merges = reachable(candidates, cand_merges, old)
    unreachable = len(candidates) - len(pieces)
    # A unit without a new id stays so when pieces and merges are removed (removing merges
    # never makes another applicable), so each round re-checks only the units that had one.
    dirty = model_units(tokenizer, protected)
    old_merges = [_pair(m) for m in base["model"]["merges"]]
    for rounds in range(1, max_rounds + 1):
        data = build(base, pieces, merges, start, old_merges)
        merged = bare_model(data)
        seen: set[int] = set()
        still = []
        for text, enc in zip(dirty, merged.encode_batch(dirty, add_special_tokens=False)):
            found = {i for i in enc.ids if i >= start}
            if found:
                seen |= found
                still.append(text)
        if not seen:
            break
        dirty = still
        vocab_r = {v: k for k, v in data["model"]["vocab"].items()}
        bad = {vocab_r[i] for i in seen}
        pieces, merges = reachable([p for p in pieces if p not in bad],
                                   [m for m in merges if a_b_ok(m, bad)], old)
    else:
        raise RuntimeError(f"vocabulary merge did not converge in {max_rounds} rounds")
    stats = {"new_model_pieces": len(new["vocab"]), "candidates": len(candidates), "rounds": rounds,
             "dropped_unreachable": unreachable, "dropped_for_old_languages": len(candidates) - unreachable - len(pieces),
             "added_tokens": len(pieces), "new_merges": len(merges), "first_new_id": start}
    return data, stats


def model_units(tokenizer, texts: Iterable[str]) -> list[str]:
    """The distinct strings the BPE model sees for ``texts``: each text normalized, then cut by
    the pre-tokenizer (a byte-level tokenizer's words, already byte-mapped; a sentencepiece-
    style one without a pre-tokenizer gives the whole normalized text). BPE runs on each
    separately, so a text tokenizes as before iff each of its units does; a corpus repeats
    its words, so there are far fewer units than texts (the 128k bench's speed)."""
    backend = tokenizer.backend_tokenizer
    normalizer, pre = backend.normalizer, backend.pre_tokenizer
    units: dict[str, None] = {}
    for text in texts:
        text = normalizer.normalize_str(text) if normalizer is not None else text
        if pre is None:
            units[text] = None
        else:
            units.update((piece, None) for piece, _ in pre.pre_tokenize_str(text))
    return list(units)


def bare_model(data: dict) -> Tokenizer:
    """The BPE model of ``data`` alone (no normalizer, pre-tokenizer, added tokens or
    post-processor), to encode the units of ``model_units``; built from the vocabulary and
    merges directly (a JSON round trip of a 144k vocabulary costs seconds per round)."""
    from tokenizers import models

    m = data["model"]
    return Tokenizer(models.BPE(vocab=m["vocab"], merges=list(m["merges"]), unk_token=m.get("unk_token"),
                                fuse_unk=bool(m.get("fuse_unk")), byte_fallback=bool(m.get("byte_fallback")),
                                ignore_merges=bool(m.get("ignore_merges"))))


def a_b_ok(merge: tuple[str, str], bad: set[str]) -> bool:
    a, b = merge
    return a not in bad and b not in bad and a + b not in bad


def to_transformers(tokenizer, data: dict):
    """A transformers tokenizer of the base tokenizer's class running the merged JSON."""
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        for stale in ("tokenizer.model", "vocab.json", "merges.txt", "spiece.model"):
            (Path(tmp) / stale).unlink(missing_ok=True)
        (Path(tmp) / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
        merged = AutoTokenizer.from_pretrained(tmp)
    if merged.pad_token is None and tokenizer.pad_token is not None:
        merged.pad_token = tokenizer.pad_token
    return merged


def changed_texts(old_tokenizer, new_tokenizer, texts: Sequence[str]) -> list[int]:
    """Indices of texts whose token ids differ between the two tokenizers (empty: all same)."""
    texts = list(texts)
    a = old_tokenizer(texts, add_special_tokens=True)["input_ids"]
    b = new_tokenizer(texts, add_special_tokens=True)["input_ids"]
    return [i for i, (x, y) in enumerate(zip(a, b)) if x != y]


# --- embeddings ---------------------------------------------------------------------------

def old_piece_ids(tokenizer, pieces: Sequence[str]) -> list[list[int]]:
    """For each new piece, the ids of the base tokenizer's BPE model on the piece's string
    (no normalization: '▁' is already the word boundary), byte fallback included."""
    model = tokenizer.backend_tokenizer.model
    return [[t.id for t in model.tokenize(piece)] for piece in pieces]


def grow_embeddings(model, rows: int) -> None:
    """Grow the token embeddings and the LM head to ``rows`` rows in place, old rows copied and
    new rows zero (``init_rows`` sets every one of them), as ``resize_token_embeddings`` does
    but without its random fills of each whole new matrix (two ``normal_`` passes per matrix:
    14 s at 128k x 4096 in bf16 on 2 CPU cores). A tied head stays the same Parameter; the
    modules are kept (Gemma's scaled embedding, padding index), so only their weights change."""
    emb, head = model.get_input_embeddings(), model.get_output_embeddings()
    tied = head is not None and head.weight is emb.weight

    def grown(param: torch.nn.Parameter) -> torch.nn.Parameter:
        new = param.new_zeros((rows, *param.shape[1:]))
        new[: param.shape[0]] = param.detach()
        return torch.nn.Parameter(new, requires_grad=param.requires_grad)

    emb.weight = grown(emb.weight)
    emb.num_embeddings = rows
    if head is not None:
        head.weight = emb.weight if tied else grown(head.weight)
        if getattr(head, "bias", None) is not None:
            head.bias = grown(head.bias)
        head.out_features = rows
    model.config.get_text_config().vocab_size = rows
    if hasattr(model, "vocab_size"):
        model.vocab_size = rows


def init_rows(weight: torch.Tensor, new_ids: Sequence[int], n_old: int, method: str, subword: list[list[int]],
              fresh: torch.Tensor) -> None:
    """Fill ``weight[new_ids]`` in place: fresh random rows, the mean of old rows, or per new
    token the mean of its old-tokenizer pieces' rows (one gather and one segment sum)."""
    with torch.no_grad():
        index = torch.tensor(list(new_ids), dtype=torch.long, device=weight.device)
        if method == "random":
            rows = fresh.to(weight)
        elif method == "mean":
            rows = weight[:n_old].mean(dim=0, keepdim=True).expand(len(new_ids), -1)
        else:  # subword-mean
            flat = torch.tensor([i for ids in subword for i in ids], dtype=torch.long, device=weight.device)
            segment = torch.tensor([k for k, ids in enumerate(subword) for _ in ids], dtype=torch.long,
                                   device=weight.device)
            sums = torch.zeros(len(subword), weight.shape[1], dtype=torch.float32, device=weight.device)
            sums.index_add_(0, segment, weight[flat].float())
            counts = torch.tensor([len(ids) for ids in subword], dtype=torch.float32, device=weight.device)
            rows = sums / counts.clamp_min(1)[:, None]
            if (counts == 0).any():  # a piece the old model cannot spell: the mean of the old rows
                rows[counts == 0] = weight[:n_old].float().mean(0)
        weight.index_copy_(0, index, rows.to(weight.dtype))


def random_rows(model, n: int, dim: int, seed: int) -> torch.Tensor:
    """``n`` rows drawn with the model's own initializer (``_init_weights`` on an embedding)."""
    module = torch.nn.Embedding(n, dim)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if hasattr(module.weight, "_is_hf_initialized"):
            module.weight._is_hf_initialized = False
        before = module.weight.detach().clone()
        model._init_weights(module)
        if torch.equal(before, module.weight.detach()):  # an initializer that skipped it
            module.weight.data.normal_(0.0, float(getattr(model.config, "initializer_range", 0.02)))
    return module.weight.detach()


# --- fertility ----------------------------------------------------------------------------

def fertility(tokenizer, texts: Sequence[str]) -> dict:
    """Tokens per whitespace word and per character (no special tokens)."""
    ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    tokens = sum(len(x) for x in ids)
    words = sum(len(t.split()) for t in texts)
    chars = sum(len(t) for t in texts)
    return {"tokens_per_word": round(tokens / max(words, 1), 4), "tokens_per_char": round(tokens / max(chars, 1), 4),
            "tokens": tokens}
