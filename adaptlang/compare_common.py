"""What the report modules share: metric sets, ordering helpers and the number formats.

Imported by adaptlang.compare (loading, grouping, statistics), adaptlang.compare_report
(rendering a comparison) and adaptlang.report (the report of one run); it imports none of
them, so the imports between those modules run one way only
(compare -> compare_report -> compare_common -> forgetting).

Numbers in tables (``fmt`` and friends) never use exponent notation nor long digit runs:
a perplexity too large to read (``LOG_FROM`` and up; an untrained model's per-character
perplexity is easily 1e11) is shown as its natural logarithm, ``log-ppl`` (nats per token
or per character), and changes of perplexities as relative changes in percent
(adaptlang.forgetting.log_scale says which metrics are perplexities).
"""
from __future__ import annotations

import json
import math

from .forgetting import log_scale, relative_change

# Per-token figures: not comparable between models with different tokenizers.
PER_TOKEN = ("ppl_token",)
# Metrics that get plots (a benchmark with none of these: its first metric).
HEADLINE = ("ppl_token", "bits_per_char", "self_similarity", "bleu", "chrf", "accuracy", "weighted_f1")
# A perplexity from this value up is shown as log-ppl = ln(ppl) (more than five integer digits).
LOG_FROM = 1e5
# A figure from this magnitude up (not a perplexity) is not shown as a number.
OVERFLOW_FROM = 1e9
OVERFLOW = "n/a (overflow)"


def merge_orders(sequences) -> list:
    """One order of stages that keeps every run's own order (pretrain, instruct + pretrain,
    adapt, instruct -> pretrain, adapt, instruct)."""
    out: list = []
    for seq in sequences:
        seq = list(seq)
        for i, x in enumerate(seq):
            if x in out:
                continue
            nxt = next((y for y in seq[i + 1:] if y in out), None)
            out.insert(out.index(nxt) if nxt is not None else len(out), x)
    return out


def ordered_union(lists) -> list:
    """Every item of the lists once, in order of first appearance."""
    out: list = []
    for items in lists:
        for x in items:
            if x not in out:
                out.append(x)
    return out


def short(v, limit: int = 200) -> str:
    """A value as one line of at most ``limit`` characters (dicts and lists as JSON)."""
    s = json.dumps(v, default=str) if isinstance(v, (dict, list)) else str(v)
    return s if len(s) <= limit else s[: limit - 1] + "…"


# ---------------------------------------------------------------- numbers

def _positional(x: float, digits: int = 3) -> str:
    """|x| < 100 with ``digits`` significant digits, without exponent (at most 8 decimals)."""
    if x == 0:
        return "0"
    decimals = min(max(digits - 1 - math.floor(math.log10(abs(x))), 0), 8)
    return f"{x:.{decimals}f}"


def fmt(x: float | None) -> str:
    """The one number format of the report tables (tests parse it back): 3 decimals, 2 from
    100 up, whole numbers with thousands separators from 1e5 up, three significant digits
    below 0.01 (small differences stay visible); never an exponent."""
    if x is None:
        return "–"
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return str(x)
    if math.isnan(x):
        return "n/a"
    if math.isinf(x) or abs(x) >= OVERFLOW_FROM:
        return OVERFLOW
    if abs(x) >= 1e5:
        return f"{x:,.0f}"
    if abs(x) >= 100:
        return f"{x:.2f}"
    if x == 0 or abs(x) >= 0.01:
        return f"{x:.3f}"
    return _positional(x)


def signed(text: str, x: float) -> str:
    """``text`` (the magnitude of ``x``) with the sign of ``x``: + or − (U+2212)."""
    return ("+" if x >= 0 else "−") + text


def _special(x: float | None) -> str | None:
    """The text of a missing, undefined or infinite value; None for a finite number."""
    if x is None:
        return "–"
    if math.isnan(x):
        return "n/a"
    if math.isinf(x):
        return OVERFLOW
    return None


def fmt_delta(x: float | None) -> str:
    return _special(x) or signed(fmt(abs(x)), x)


def fmt_pct(r: float | None) -> str:
    """A relative change (0.125 = +12.5 %) in percent, three significant digits; an increase
    of 10 times and more as a factor (×12.5), of 1000 times and more as ×1000+."""
    if r is None or math.isnan(r):
        return "n/a"
    if math.isinf(r):
        return OVERFLOW
    if r >= 999:
        return "×1000+"
    if r >= 9:
        return f"×{_positional(1 + r)}"
    pct = 100 * r
    return signed(_positional(abs(pct)) + "%", pct)


def fmt_log(x: float | None) -> str:
    """A log-ppl (natural log of a perplexity) to two decimals."""
    return _special(x) or f"{x:.2f}"


def ln(x: float | None) -> float | None:
    """Natural log of a positive finite number; None otherwise."""
    if x is None or isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x) or x <= 0:
        return None
    return math.log(x)


def too_large(metric: str, *values) -> bool:
    """Whether a perplexity-like ``metric`` with these values is shown as log-ppl."""
    return log_scale(metric) and any(
        isinstance(v, (int, float)) and not isinstance(v, bool) and (not math.isfinite(v) or abs(v) >= LOG_FROM)
        for v in values if v is not None)


def fmt_metric(metric: str, x) -> str:
    """One figure of ``metric`` in a table cell: a perplexity too large to read as
    ``log-ppl <ln ppl>``, anything else as ``fmt``."""
    if x is None or isinstance(x, str):
        return "–" if x is None else x
    if too_large(metric, x):
        v = ln(x)
        return OVERFLOW if v is None else f"log-ppl {fmt_log(v)}"
    return fmt(x)


def fmt_change(metric: str, before, after, mark: str = "") -> str:
    """The change from ``before`` to ``after`` (then ``mark``), the two values beside it:
    a perplexity's relative change in percent (the values as log-ppl when too large to
    read), any other metric's difference. E.g. ``+3.41%* (412.30 → 426.36)``."""
    if log_scale(metric):
        rel = fmt_pct(relative_change(before, after)) + mark
        if too_large(metric, before, after):
            return f"{rel} (log-ppl {fmt_log(ln(before))} → {fmt_log(ln(after))})"
        return f"{rel} ({fmt(before)} → {fmt(after)})"
    return f"{fmt_delta(after - before)}{mark} ({fmt(before)} → {fmt(after)})"
