"""The report section of the ``vocab`` strategy (vocabulary expansion): how many tokens the
merge added and the token fertility (tokens per word and per character) per language,
before and after the merge, from its notes (metrics.json ``stages.<stage>.strategy_notes.vocab``,
written by adaptlang.strategies.vocab). ``VocabularyExpansion.report_section`` calls
``vocab_report_section``. It is a module of its own because it only reads notes: it imports
nothing (not the tokenizer machinery of ``merge.py``).
"""
from __future__ import annotations


def _int(v) -> str:
    return f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else "?"


def _num(v, decimals: int) -> str:
    return f"{v:.{decimals}f}" if isinstance(v, (int, float)) and not isinstance(v, bool) else "–"


def vocab_report_section(stage: str, notes: dict) -> list[str]:
    """Markdown lines for the ``vocab`` entry of one stage's ``strategy_notes`` (``notes``:
    the whole dict); [] when the stage has none."""
    vocab = (notes or {}).get("vocab")
    if not isinstance(vocab, dict):
        return []
    lines = ["", f"## Vocabulary expansion (stage {stage})", "",
             f"{_int(vocab.get('added_tokens'))} tokens added ({_int(vocab.get('vocab_size_before'))} -> "
             f"{_int(vocab.get('vocab_size_after'))}); {_int(vocab.get('dropped_for_old_languages'))} new pieces "
             "dropped to keep the protected languages' tokenization exact."]
    setup = [f"{k} {vocab[k]}" for k in ("init", "head", "body") if vocab.get(k) is not None]
    if isinstance(vocab.get("trainable_parameters"), int):
        setup.append(f"{_int(vocab['trainable_parameters'])} trainable parameters")
    for key, label in (("learned_from", "learned from"), ("protected", "protected")):
        if vocab.get(key):
            value = vocab[key]
            setup.append(f"{label} {' '.join(map(str, value)) if isinstance(value, list) else value}")
    if setup:
        lines += ["", "Setup: " + "; ".join(setup) + "."]
    fertility = vocab.get("fertility") or {}
    if fertility:
        lines += ["", "| language | class | tokens/word before | after | tokens/char before | after |",
                  "|---|---|---:|---:|---:|---:|"]
        for code, f in fertility.items():
            b, a = f.get("before") or {}, f.get("after") or {}
            lines.append(f"| {code} | {f.get('class', '?')} | {_num(b.get('tokens_per_word'), 2)} | "
                         f"{_num(a.get('tokens_per_word'), 2)} | {_num(b.get('tokens_per_char'), 3)} | "
                         f"{_num(a.get('tokens_per_char'), 3)} |")
    return lines
