"""Greedy samples: the model's answers to a few fixed prompts, before and after each stage.

Numbers say how far a language's perplexity moved; a sample says what the model now does
with it (a new language answered, an English answer kept or broken). ``eval.samples.prompts``
maps a label to a prompt; each is put in the tokenizer's chat template when it has one (as a
user turn), else given as plain text, and answered greedily (``do_sample=False``) with at
most ``eval.samples.max_new_tokens`` new tokens. The result has no classes (a sample is not
averaged); the report shows each prompt's answer per stage, the starting model first.
"""
from __future__ import annotations

import torch

from . import register_benchmark


def answer(model, tokenizer, prompt: str, max_new_tokens: int) -> str:
    if getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                            return_tensors="pt", return_dict=True)["input_ids"]
    else:
        ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model.generate(input_ids=ids.to(device), attention_mask=torch.ones_like(ids).to(device),
                                 do_sample=False, max_new_tokens=max_new_tokens,
                                 pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
    finally:
        model.train(was_training)
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()


@register_benchmark("samples")
def samples(model, tokenizer, languages, cfg) -> dict:
    scfg = cfg.eval.get("samples") or {}
    prompts = dict(scfg.get("prompts") or {})
    n = int(scfg.get("max_new_tokens", 32))
    return {"languages": {}, "classes": {}, "skipped": {},
            "samples": {str(label): {"prompt": str(p), "answer": answer(model, tokenizer, str(p), n)}
                        for label, p in prompts.items()},
            "settings": {"max_new_tokens": n, "decoding": "greedy"}}
