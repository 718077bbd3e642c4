"""Forgetting across stages: did adapting hurt the languages the model already knew?

For every benchmark and every class-level figure (``classes`` of a benchmark result, e.g.
perplexity's pretraining / adapting / other / overall, or a classification task's
pretrained / seen / unseen), the change from the *baseline stage* to each later stage:
``delta = later - baseline``. The baseline is the stage before adaptation, i.e. the first
stage of the run (``pretrain`` in the default experiment) unless given. Counts (``n_*``)
are not differenced. ``direction`` says, for the metrics it knows, whether lower or higher
is better, so ``worse`` (a delta in the bad direction) can be read off per figure.

AF paper section 5 (Table 3 and its discussion: adapting to new languages degrades the
others); Instruct-Align Figure 2 (delta against the zero-shot baseline per language group).
"""
from __future__ import annotations

# Which way is better, per metric name (a metric not listed has no direction). Perplexity
# family and Ethayarajh self-similarity (the AF paper's "isotropy", Table 2: lower = better
# contextualised): lower; task scores: higher. Shared with the comparison reports.
DIRECTIONS = {
    "ppl_token": "lower", "bits_per_char": "lower", "ppl_char": "lower", "bits_per_byte": "lower",
    "self_similarity": "lower", "adjusted_self_similarity": "lower",
    "accuracy": "higher", "weighted_f1": "higher", "f1": "higher", "macro_f1": "higher",
    "bleu": "higher", "chrf": "higher",
}


def direction(metric: str) -> str | None:
    return DIRECTIONS.get(metric)


def _numeric(figures: dict) -> dict:
    return {k: v for k, v in figures.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and not k.startswith("n_")}


def forgetting(stages: dict, baseline: str | None = None) -> dict:
    """``stages``: metrics["stages"] (stage -> {"eval": {benchmark: result}}).
    Returns {"baseline", "direction": {metric: lower|higher}, "deltas": {stage: {benchmark:
    {class: {metric: delta}}}}, "worse": {stage: {benchmark: {class: [metrics]}}}}."""
    names = list(stages)
    if not names:
        return {"baseline": None, "direction": {}, "deltas": {}, "worse": {}}
    base = baseline if baseline is not None else names[0]
    if base not in stages:
        raise KeyError(f"baseline stage '{base}' is not among {names}")
    base_eval = stages[base].get("eval", {})
    deltas: dict = {}
    worse: dict = {}
    directions: dict = {}
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
                    d = direction(metric)
                    if d:
                        directions[metric] = d
                        if (d == "lower" and delta > 0) or (d == "higher" and delta < 0):
                            worse.setdefault(stage, {}).setdefault(bench, {}).setdefault(cls, []).append(metric)
    return {"baseline": base, "direction": directions, "deltas": deltas, "worse": worse}
