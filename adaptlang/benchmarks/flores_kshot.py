"""FLORES-200 k-shot translation English -> X (AF paper section 4 "Evaluation Setup": 4-shot,
its prompt in Appendix C), per language and class, BLEU and chrF++ (sacrebleu).

* test sentences: the first ``eval.flores.sentences`` lines of the evaluation part
  (FLORES-200 devtest lines 500-1011, ``data.FLORES_EVAL``);
* shots: ``k`` pairs drawn at random (seeded by the run's seed and the test line) from the
  pool part only (lines 0-499, ``data.FLORES_POOL``); a pool pair whose English or target
  side equals the test sentence's is never used (``pick_shots``); the same test line gets
  the same shots in every language (comparable across languages);
* prompt: ``prompts/flores.yaml`` ``af`` (default, the Appendix C chat prompt, with the
  examples as ``English: ...`` / ``<Language>: ...`` lines) or ``plain`` (no chat markup);
* decoding: greedy (``model.generate(do_sample=False)``), at most
  ``eval.flores.max_new_tokens`` new tokens, stopped at the first newline; the hypothesis is
  the generated text up to the first newline or ``<|im_end|>``, stripped. A prompt longer
  than the model's context (minus the generation budget) keeps its last tokens and is
  counted in ``n_truncated``;
* scores: ``sacrebleu`` corpus BLEU (default 13a tokenizer) and chrF++ (``CHRF(word_order=2)``)
  per language; their signatures are recorded in the result (``signatures``).

Languages without FLORES text (se, co, ...) and English itself (the source) are listed in
``skipped`` with the reason. Deviations: the paper ran lm-evaluation-harness; we implement
the same prompt and decoding directly. The paper does not print how its examples are laid
out inside {{text}}, nor its generation cap; ours are above. BLEU with 13a is poor for
unsegmented scripts (zh, ja, th, my); chrF++ is the script-robust figure.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import sacrebleu
import torch
import yaml

from ..sources import FLORES_EVAL, FLORES_POOL, flores_lines
from ..errors import UserError, listing
from . import register_benchmark
from ._common import means_by_group, resolve_codes
from ..progress import log_seconds, track

PROMPTS = Path(__file__).parent / "prompts" / "flores.yaml"
METRICS = ("bleu", "chrf")
SOURCE = "en"


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def load_prompt(name: str) -> dict:
    prompts = yaml.safe_load(PROMPTS.read_text(encoding="utf-8"))
    if name not in prompts:
        raise UserError(f"eval.flores.prompt='{name}': unknown prompt. Valid: {listing(prompts)}")
    return prompts[name]


def pick_shots(test_line: int, k: int, seed: int, english: list[str], target: list[str],
               test_source: str, test_target: str) -> list[int]:
    """k pool line numbers (indices into FLORES_POOL) for one test line; never a pair whose
    English or target sentence equals the test sentence's."""
    allowed = [i for i in range(len(english)) if english[i] != test_source and target[i] != test_target]
    if k > len(allowed):
        raise UserError(f"eval.flores.shots={k}: the pool has only {len(allowed)} usable pairs")
    rng = np.random.default_rng([seed, test_line])
    return [allowed[i] for i in rng.choice(len(allowed), size=k, replace=False)]


def build_prompt(template: dict, language: str, shots: list[tuple[str, str]], source: str) -> str:
    text = "".join(template["shot"].format(source=s, target=t, language=language) for s, t in shots)
    text += template["query"].format(source=source, language=language)
    k = len(shots)
    return template["prompt"].format(text=text, language=language, k=k, ordinal=ordinal(k + 1))


def clean(hypothesis: str) -> str:
    return hypothesis.split("<|im_end|>")[0].split("\n")[0].strip()


@torch.inference_mode()
def generate(model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int) -> tuple[list[str], int]:
    """Greedy continuations of the prompts (left-padded batches); returns (texts, n_truncated)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    limit = getattr(model.config, "max_position_embeddings", None) or 10**9
    budget = max(1, limit - max_new_tokens)
    encoded, truncated = [], 0
    for ids in tokenizer(prompts, add_special_tokens=False)["input_ids"]:
        ids = bos + ids
        if len(ids) > budget:
            ids, truncated = bos + ids[len(ids) - budget + len(bos):], truncated + 1
        encoded.append(ids)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out = [""] * len(prompts)
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        width = max(len(encoded[i]) for i in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for r, i in enumerate(rows):
            ids[r, width - len(encoded[i]):] = torch.tensor(encoded[i])
            mask[r, width - len(encoded[i]):] = 1
        gen = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), do_sample=False,
                             max_new_tokens=max_new_tokens, pad_token_id=pad, eos_token_id=tokenizer.eos_token_id,
                             stop_strings=["\n"], tokenizer=tokenizer)
        for r, i in enumerate(rows):
            out[i] = clean(tokenizer.decode(gen[r, width:], skip_special_tokens=True))
    if was_training:
        model.train()
    return out, truncated


def score_translations(hyps: list[str], refs: list[str]) -> dict:
    """Corpus BLEU (13a) and chrF++ (chrF with word_order=2) of one language, with signatures."""
    bleu, chrf = sacrebleu.metrics.BLEU(), sacrebleu.metrics.CHRF(word_order=2)
    return {"bleu": bleu.corpus_score(hyps, [refs]).score, "chrf": chrf.corpus_score(hyps, [refs]).score,
            "signatures": {"bleu": str(bleu.get_signature()), "chrf": str(chrf.get_signature())}}


def flores_benchmark(model, tokenizer, languages, cfg, shots: int) -> dict:
    fcfg = cfg.eval.get("flores") or {}
    template = load_prompt(str(fcfg.get("prompt", "af")))
    n = int(fcfg.get("sentences", 16))
    seed = int(cfg.get("seed", 0))
    lines = list(FLORES_EVAL)[:n]
    eng_pool, eng_test = flores_lines("eng_Latn", FLORES_POOL), flores_lines("eng_Latn", FLORES_EVAL)[:n]
    per_language, skipped, signatures = {}, {}, score_translations([""], ["."])["signatures"]
    codes = resolve_codes(fcfg.get("languages", "all"), languages)
    for code in track(codes, f"eval flores {shots}-shot", seconds=log_seconds(cfg)):
        lang = languages.check(code)
        if code == SOURCE:
            skipped[code] = "the source language (English -> X)"
            continue
        if not lang.flores:
            skipped[code] = "no FLORES-200 text"
            continue
        pool, refs = flores_lines(lang.flores, FLORES_POOL), flores_lines(lang.flores, FLORES_EVAL)[:n]
        prompts = []
        for line, src, ref in zip(lines, eng_test, refs):
            picked = pick_shots(line, shots, seed, eng_pool, pool, src, ref)
            prompts.append(build_prompt(template, lang.name, [(eng_pool[i], pool[i]) for i in picked], src))
        hyps, truncated = generate(model, tokenizer, prompts, int(fcfg.get("max_new_tokens", 48)),
                                   int(cfg.eval.batch_size))
        scores = score_translations(hyps, refs)
        signatures = scores.pop("signatures")
        per_language[code] = {
            "class": languages.class_of(code), **scores,
            "n_sentences": len(refs), "n_truncated": truncated, "example": {"reference": refs[0], "hypothesis": hyps[0]},
        }
    return {"languages": per_language, "classes": means_by_group(per_language, languages.classes, METRICS),
            "skipped": skipped, "shots": shots, "prompt": str(fcfg.get("prompt", "af")),
            "signatures": signatures}


def check(cfg, languages) -> None:
    fcfg = cfg.eval.get("flores") or {}
    resolve_codes(fcfg.get("languages", "all"), languages)
    load_prompt(str(fcfg.get("prompt", "af")))
    if int(fcfg.get("shots", 4)) < 0 or int(fcfg.get("max_new_tokens", 48)) < 1:
        raise UserError("eval.flores: shots must be >= 0 and max_new_tokens >= 1")


@register_benchmark("flores_4shot")
def flores_4shot(model, tokenizer, languages, cfg) -> dict:
    """The AF paper's setting: 4 shots."""
    return flores_benchmark(model, tokenizer, languages, cfg, 4)


@register_benchmark("flores_kshot")
def flores_kshot(model, tokenizer, languages, cfg) -> dict:
    """k = eval.flores.shots."""
    return flores_benchmark(model, tokenizer, languages, cfg, int((cfg.eval.get("flores") or {}).get("shots", 4)))


flores_4shot.check = flores_kshot.check = check
