"""Forgetting across stages: did adapting hurt the languages the model already knew?

For every benchmark and every class-level figure (``classes`` of a benchmark result, e.g.
perplexity's pretraining / adapting / other / overall, or a classification task's
pretrained / seen / unseen), the change from the *baseline stage* to each later stage:
``delta = later - baseline``. The baseline is the stage before adaptation, i.e. the first
stage of the run (``pretrain`` in the default experiment) unless given. Counts (``n_*``)
are not differenced. ``direction`` says, for the metrics it knows, whether lower or higher
is better, so ``worse`` (a delta in the bad direction) can be read off per figure.

Perplexities (``log_scale``: ppl_token, ppl_char, any ``ppl*`` or ``*perplexity`` metric)
are exponentials of a mean log-loss: their differences are meaningless to a reader once
the values are large (an untrained model's per-character perplexity is ~1e11, and a delta
of -241588325432 says nothing). For them the result also has ``relative`` (``later /
baseline - 1``) and ``log_ratio`` (``ln later - ln baseline``, the change of log-ppl, i.e.
of nats per token or character); ``deltas`` stay the raw differences.

AF paper section 5 (Table 3 and its discussion: adapting to new languages degrades the
others); Instruct-Align Figure 2 (delta against the zero-shot baseline per language group).
"""
from __future__ import annotations

import math

# Which way is better, per metric name (a metric not listed has no direction). Perplexity
# family and Ethayarajh self-similarity (the AF paper's "isotropy", Table 2: lower = better
# contextualised): lower; task scores: higher. Shared with the comparison reports.
DIRECTIONS = {
    "ppl_token": "lower", "bits_per_char": "lower", "ppl_char": "lower", "bits_per_byte": "lower",
    "self_similarity": "lower", "adjusted_self_similarity": "lower",
    "accuracy": "higher", "weighted_f1": "higher", "f1": "higher", "macro_f1": "higher",
    "bleu": "higher", "chrf": "higher",
}


# Perplexity-like metrics: exp(mean log-loss), shown as relative change / log-ppl.
LOG_SCALE = ("ppl_token", "ppl_char")


# lm-evaluation-harness figures are named ``<task>_<metric>`` (lm_eval_tasks): the harness's
# own metric names, higher is better for these (its ``higher_is_better`` for each of them)
HARNESS_HIGHER = ("acc", "acc_norm", "f1", "exact_match", "mcc", "bleu", "chrf")


def direction(metric: str) -> str | None:
    """"lower" or "higher" is better, or None when the metric is not known."""
    if metric in DIRECTIONS:
        return DIRECTIONS[metric]
    if any(metric.endswith("_" + name) for name in HARNESS_HIGHER):
        return "higher"
    if metric.endswith("perplexity") or metric.endswith("_bits_per_byte"):
        return "lower"
    return None


def log_scale(metric: str) -> bool:
    """Whether ``metric`` is a perplexity (an exponential): compare it by ratio, not difference."""
    return metric in LOG_SCALE or metric.startswith("ppl") or metric.endswith("perplexity")


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def relative_change(before, after) -> float | None:
    """``after / before - 1`` (0.125 = 12.5 % more); None when undefined (zero or not finite)."""
    if not (_finite(before) and _finite(after)) or before == 0:
        return None
    return (after - before) / abs(before)


def log_ratio(before, after) -> float | None:
    """``ln after - ln before`` for positive finite values, else None."""
    if not (_finite(before) and _finite(after)) or before <= 0 or after <= 0:
        return None
    return math.log(after) - math.log(before)


def _numeric(figures: dict) -> dict:
    return {k: v for k, v in figures.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and not k.startswith("n_")}


def forgetting(stages: dict, baseline: str | None = None) -> dict:
    """``stages``: metrics["stages"] (stage -> {"eval": {benchmark: result}}).
    Returns {"baseline", "direction": {metric: lower|higher}, "deltas": {stage: {benchmark:
    {class: {metric: delta}}}}, "worse": {stage: {benchmark: {class: [metrics]}}},
    "relative" and "log_ratio": {stage: {benchmark: {class: {metric: value}}}} for the
    perplexity-like metrics (``log_scale``) where defined}."""
    names = list(stages)
    if not names:
        return {"baseline": None, "direction": {}, "deltas": {}, "worse": {}, "relative": {}, "log_ratio": {}}
    base = baseline if baseline is not None else names[0]
    if base not in stages:
        raise KeyError(f"baseline stage '{base}' is not among {names}")
    base_eval = stages[base].get("eval", {})
    deltas: dict = {}
    worse: dict = {}
    directions: dict = {}
    derived: dict = {"relative": {}, "log_ratio": {}}
    for stage in names[names.index(base) + 1:]:
        for bench, result in stages[stage].get("eval", {}).items():
            before = base_eval.get(bench, {}).get("classes", {})
            for cls, figures in result.get("classes", {}).items():
                if cls not in before:
                    continue
                old = _numeric(before[cls])
                for metric, value in _numeric(figures).items():
                    if metric not in old:
                        continue
                    delta = value - old[metric]
                    deltas.setdefault(stage, {}).setdefault(bench, {}).setdefault(cls, {})[metric] = delta
                    if log_scale(metric):
                        for key, fn in (("relative", relative_change), ("log_ratio", log_ratio)):
                            v = fn(old[metric], value)
                            if v is not None:
                                derived[key].setdefault(stage, {}).setdefault(bench, {}).setdefault(cls, {})[metric] = v
                    d = direction(metric)
                    if d:
                        directions[metric] = d
                        if (d == "lower" and delta > 0) or (d == "higher" and delta < 0):
                            worse.setdefault(stage, {}).setdefault(bench, {}).setdefault(cls, []).append(metric)
    return {"baseline": base, "direction": directions, "deltas": deltas, "worse": worse, **derived}
