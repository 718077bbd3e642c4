"""Instruction data: sources registered by name, prompt templates as data files, encoding.

A source is a function ``(languages, cfg, seed) -> list[dict]`` of examples with at least
``prompt`` and ``target``; templates live in ``instructions/templates/*.yaml``.
Encoding puts the loss on the target tokens only (the prompt is context), as in
instruction tuning. A tokenizer with a chat template (Llama 3 / Qwen2 / Phi-3 instruct
checkpoints) formats each example as a user turn (the prompt) and an assistant turn (the
target) with that template, the loss on the assistant turn only; ``data.chat_template=false``
or a tokenizer without a template gives the plain format ``[BOS] prompt target [EOS]``.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

import yaml

from ..errors import UserError
from ..registry import Registry

SOURCES: Registry = Registry("instruction source")
TEMPLATES = Path(str(resources.files("adaptlang") / "instructions" / "templates"))


def register_source(name: str):
    return SOURCES.register(name)


def load_builtin() -> None:
    from ..plugins import import_all

    import_all("adaptlang.instructions")


def load_templates(name: str) -> dict:
    path = TEMPLATES / f"{name}.yaml"
    if not path.is_file():
        raise UserError(f"no template file {path.name} in {TEMPLATES}")
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def encode(example: dict, tokenizer, max_length: int, loss_on_prompt: bool = False) -> dict:
    """[BOS] prompt target [EOS]; labels are -100 on BOS and the prompt (on BOS only with
    ``loss_on_prompt``: the whole prompt is trained on, as a plain language-model example)."""
    prompt = tokenizer(example["prompt"], add_special_tokens=False)["input_ids"]
    target = tokenizer(example["target"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    budget = max_length - len(bos)
    if len(prompt) + len(target) > budget:  # keep at least half the budget for the target
        keep_target = min(len(target), max(budget // 2, budget - len(prompt)))
        target = target[:keep_target]
        prompt = prompt[-(budget - len(target)):] if budget - len(target) > 0 else []
    ids = bos + prompt + target
    labels = [-100] * len(bos) + (prompt if loss_on_prompt else [-100] * len(prompt)) + target
    return {"input_ids": ids, "labels": labels}


def _ids(encoded) -> list[int]:
    return list(encoded["input_ids"] if hasattr(encoded, "keys") else encoded)


def encode_chat(example: dict, tokenizer, max_length: int) -> dict | None:
    """The tokenizer's chat template: user turn = prompt (no loss), assistant turn = target
    (loss, the template's end-of-turn tokens included). None when the template does not
    render the prompt as a prefix of the whole conversation (then the plain format is used)."""
    user = [{"role": "user", "content": example["prompt"]}]
    prompt = _ids(tokenizer.apply_chat_template(user, add_generation_prompt=True, tokenize=True))
    full = _ids(tokenizer.apply_chat_template(user + [{"role": "assistant", "content": example["target"]}],
                                              tokenize=True))
    if full[:len(prompt)] != prompt or len(full) == len(prompt):
        return None
    target = full[len(prompt):]
    if len(full) > max_length:  # keep at least half the budget for the target, as encode does
        target = target[:min(len(target), max(max_length // 2, max_length - len(prompt)))]
        prompt = prompt[-(max_length - len(target)):] if max_length - len(target) > 0 else []
    return {"input_ids": prompt + target, "labels": [-100] * len(prompt) + target}


def uses_chat_template(tokenizer, enabled: bool = True) -> bool:
    return bool(enabled and getattr(tokenizer, "chat_template", None))


def encode_one(example: dict, tokenizer, max_length: int, chat_template: bool = True,
               loss_on_prompt: bool = False) -> dict:
    """One example in the tokenizer's chat template when it has one and it is enabled, else plain."""
    chat = uses_chat_template(tokenizer, chat_template) and encode_chat(example, tokenizer, max_length)
    if chat and loss_on_prompt:
        chat["labels"] = list(chat["input_ids"])
    return chat or encode(example, tokenizer, max_length, loss_on_prompt)


def encode_all(examples: list[dict], tokenizer, max_length: int, chat_template: bool = True,
               loss_on_prompt: bool = False):
    """Encode instruction examples (encode_one each)."""
    import datasets

    ds = datasets.Dataset.from_list([{"prompt": e["prompt"], "target": e["target"]} for e in examples])
    return ds.map(lambda e: encode_one(e, tokenizer, max_length, chat_template, loss_on_prompt),
                  remove_columns=["prompt", "target"], keep_in_memory=True)


def chat_setting(cfg) -> bool:
    """Whether ``data.chat_template`` lets examples use the tokenizer's chat template (auto or
    true; auto when unset)."""
    data = cfg.get("data") if cfg is not None else None
    value = data.get("chat_template", "auto") if data is not None else "auto"
    return str(value).lower() not in ("false", "no")


def check_chat_template(cfg, tokenizer, where: str) -> None:
    """``data.chat_template=true`` asks for the chat template: refuse a tokenizer without one
    (``auto`` falls back to plain prompt/target text)."""
    data = cfg.get("data") if cfg is not None else None
    if data is not None and str(data.get("chat_template", "auto")).lower() == "true" \
            and not getattr(tokenizer, "chat_template", None):
        raise UserError(f"data.chat_template=true, but the tokenizer of {where} has no chat template; use "
                        "data.chat_template=auto (plain prompt/target text where there is none) or a chat model")


def user_sources(cfg) -> dict:
    """``data.instructions`` (name -> spec) of ``cfg``, as plain dicts."""
    from omegaconf import OmegaConf

    data = cfg.get("data") if cfg is not None else None
    raw = data.get("instructions") if data is not None else None
    return OmegaConf.to_container(raw, resolve=True) if raw else {}


def check_source(name: str, cfg, where: str) -> None:
    """Refuse an unknown source, a bad spec, or (local files) a mapping naming missing columns."""
    from . import files

    user = user_sources(cfg)
    if name in user:
        spec = files.check_spec(name, user[name])
        if not spec["path"].startswith("hub:"):
            files.check_columns(spec, files.columns_of(spec))
        return
    load_builtin()
    if name not in SOURCES:
        valid = list(SOURCES) + list(user)
        raise UserError(f"{where}: unknown instruction source '{name}'. Valid: {', '.join(sorted(valid))} "
                        f"(or define one in data.instructions.<name>: path, fields, language)")


def build(source: str, languages: list[str], cfg, seed: int, limit: int | None = None) -> list[dict]:
    """The examples of a built-in source or of a user's ``data.instructions`` entry (all its
    rows, whatever ``languages``; ``limit``: rows to stream from a folder or hub source
    without ``max_rows``)."""
    user = user_sources(cfg)
    if source in user:
        from . import files

        return files.read_source(files.check_spec(source, user[source]), seed, load_templates("english"), limit)
    load_builtin()
    examples = SOURCES.get(source)(languages, cfg, seed)
    if not examples:
        raise UserError(f"instruction source '{source}' produced no examples for {languages}")
    return examples
