"""The human report of one run (Markdown).

A section that presents a strategy's notes comes from that strategy
(``Strategy.report_section``, looked up in the registry by the names in
``stages.<stage>.strategies``): this module knows no strategy's note keys, and lists the
notes themselves one short line each. Numbers use the formats of adaptlang.compare_common:
a perplexity too large to read is shown as log-ppl = ln(ppl), the forgetting table gives
a perplexity's change in percent with the two values beside it; never an exponent.
"""
from __future__ import annotations

import logging
from pathlib import Path

from .compare_common import fmt, fmt_change, fmt_delta, fmt_metric, short
from .config import to_yaml
from .forgetting import LOG_SCALE
from .rundir import write_atomic
from .strategy import STRATEGIES

log = logging.getLogger("adaptlang")
NOTE_ENTRIES = 4  # a note (dict or list) with more entries than this is summed up in its line


def _scalar(v) -> str:
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return fmt(v) if isinstance(v, float) else short(v, 60)


def note_text(value, own_section: bool = False) -> str:
    """One strategy note as a short line: a dict or list of more than ``NOTE_ENTRIES``
    entries is summed up (its first scalar entries, the sum of numbers), the full value is
    in metrics.json; ``own_section``: a strategy's report section presents it."""
    if own_section and isinstance(value, (dict, list)):
        return f"{len(value)} entries, presented in the strategy's section below"
    if isinstance(value, dict) and len(value) > NOTE_ENTRIES:
        scalars = [(k, v) for k, v in value.items() if not isinstance(v, (dict, list))]
        numbers = [v for _, v in scalars if isinstance(v, (int, float)) and not isinstance(v, bool)]
        total = f" (sum {_scalar(sum(numbers))})" if numbers and len(numbers) == len(value) else ""
        shown = scalars[:NOTE_ENTRIES]
        text = f"{len(value)} entries{total}"
        if shown:
            text += ": " + ", ".join(f"{k} {_scalar(v)}" for k, v in shown)
        rest = len(value) - len(shown)
        return text + (f", and {rest} more in metrics.json" if rest else "")
    if isinstance(value, list) and len(value) > NOTE_ENTRIES:
        return (f"{len(value)} items: " + ", ".join(short(v, 40) for v in value[:NOTE_ENTRIES])
                + f", and {len(value) - NOTE_ENTRIES} more in metrics.json")
    return short(value, 160)


def strategy_sections(metrics: dict) -> tuple[list[str], set[tuple[str, str]]]:
    """The report sections of the strategies of every stage (``Strategy.report_section``),
    and the (stage, strategy) pairs that gave one. A strategy name that is not registered
    (a plugin not imported here) is skipped; a section that fails is reported as such."""
    from .plugins import import_all

    import_all("adaptlang.strategies")
    lines: list[str] = []
    given: set[tuple[str, str]] = set()
    for stage, st in metrics["stages"].items():
        notes = st.get("strategy_notes") or {}
        for name in st.get("strategies") or []:
            if name not in STRATEGIES:
                continue
            try:
                section = list(STRATEGIES.get(name).report_section(stage, notes) or [])
            except Exception as exc:  # a plugin's report section must not lose the run's report
                log.warning("report: the section of strategy %s (stage %s) failed: %s", name, stage, exc)
                section = ["", f"*The report section of strategy `{name}` (stage {stage}) failed: "
                               f"{type(exc).__name__}: {short(str(exc), 200)}*"]
            if section:
                given.add((stage, name))
                lines += section
    return lines, given


LR_PLOT = "lr.png"


def write_report(path: Path, metrics: dict, cfg) -> None:
    """report.md, and beside it lr.png (the learning rate per step of every stage)."""
    curves = lr_curves(metrics["stages"])
    if curves:
        from .compare_report import _plt, _png

        plt = _plt()
        fig, ax = plt.subplots(figsize=(7, 2.6), layout="constrained")
        for name, points in curves.items():
            ax.plot([p[0] for p in points], [p[1] for p in points], label=name)
        ax.set_xlabel("optimizer step (run)")
        ax.set_ylabel("learning rate")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        (path.parent / LR_PLOT).write_bytes(_png(fig))
    write_atomic(path, render_report(metrics, cfg))


def lr_curves(stages: dict) -> dict[str, list]:
    """Stage -> [run step, lr] of its schedule (metrics.json ``train.lr_by_step``), stages one after another."""
    curves, offset = {}, 0
    for name, st in stages.items():
        train = st.get("train") or {}
        if train.get("lr_by_step"):
            curves[name] = [[offset + step, lr] for step, lr in train["lr_by_step"]]
        offset += int(train.get("steps", 0))
    return curves


def render_report(metrics: dict, cfg=None) -> str:
    """report.md of a run from its metrics (and resolved config: its section, when given)."""
    lines = [f"# adaptlang run `{metrics['run']}`", "",
             f"Strategies: {' + '.join(metrics['strategies']) or 'none'} | seed {metrics['seed']} | "
             f"model: {metrics['model']['source']}, {metrics['model']['parameters']['total']:,} parameters, "
             f"vocabulary {metrics['model']['vocab_size']:,} | {metrics.get('seconds', '?')} s in all", "",
             "## Training", "",
             "| stage | strategies | steps | tokens | seconds | tokens/s | first loss | final loss |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for name, st in metrics["stages"].items():
        if st.get("starting_model"):
            lines.append(f"| {name} | the starting model, evaluated before training | – | – | – | – | – | – |")
            continue
        t = st["train"]
        lines.append(f"| {name} | {', '.join(st['strategies']) or '-'} | {t['steps']} | {t['tokens']:,} | "
                     f"{t['seconds']:.1f} | {t['tokens_per_second']:,.0f} | {t['first_loss']:.3f} | {t['final_loss']:.3f} |")
    if lr_curves(metrics["stages"]):
        lines += ["", f"Learning rate per step (every stage's schedule; also train/lr in the trackers): "
                      f"![learning rate]({LR_PLOT})"]
    lines += mixture_lines(metrics["stages"])
    sizes = {name: st.get("vocab_size") for name, st in metrics["stages"].items()}
    if any(v is not None for v in sizes.values()):
        lines += ["", "Vocabulary after each stage: " + ", ".join(f"{n} {_scalar(v)}" for n, v in sizes.items())]
    sections, given = strategy_sections(metrics)
    notes = [(name, key, value) for name, st in metrics["stages"].items()
             for key, value in (st.get("strategy_notes") or {}).items()]
    if notes:
        lines.append("")
    for name, key, value in notes:
        lines.append(f"- {name}: {key} = {note_text(value, (name, key) in given)}")
    lines += sections
    ppl = {n: st["eval"].get("perplexity") for n, st in metrics["stages"].items() if "perplexity" in st["eval"]}
    if ppl:
        classes = list(next(iter(ppl.values()))["classes"])
        lines += ["", "## Held-out perplexity by language class", "",
                  "Per token (not comparable across tokenizers) and bits per character (comparable); "
                  "a perplexity too large to read as log-ppl = ln(ppl).", "",
                  "| stage | " + " | ".join(f"{c} ppl/token | {c} bits/char" for c in classes) + " |",
                  "|---|" + "---:|---:|" * len(classes)]
        for stage, res in ppl.items():
            cells = []
            for c in classes:
                v = res["classes"].get(c, {})
                cells += [fmt_metric("ppl_token", v.get("ppl_token")), fmt_metric("bits_per_char", v.get("bits_per_char"))]
            lines.append(f"| {stage} | " + " | ".join(cells) + " |")
        last = list(ppl.values())[-1]
        if last["skipped"]:
            lines += ["", "Skipped languages: " + "; ".join(f"{c} ({why})" for c, why in last["skipped"].items())]
        lines += ["", "### Per language (last stage)", "", "| language | class | ppl/token | bits/char | source |",
                  "|---|---|---:|---:|---|"]
        for code, v in last["languages"].items():
            lines.append(f"| {code} | {v['class']} | {fmt_metric('ppl_token', v.get('ppl_token'))} | "
                         f"{fmt_metric('bits_per_char', v.get('bits_per_char'))} | {v.get('source', '?')} |")
    lines += _benchmark_tables(metrics)
    lines += model_lines(metrics)
    env = metrics["environment"]
    lines += ["", "## Environment", "", ", ".join(f"{k} {v}" for k, v in env.items()), ""]
    if cfg is not None:
        lines += ["## Resolved config", "", "```yaml", to_yaml(cfg).rstrip(), "```", ""]
    return "\n".join(lines)


def model_lines(metrics: dict) -> list[str]:
    """Where a complete run's adapted model is, and how to export it."""
    trained = [n for n, st in metrics["stages"].items() if not st.get("starting_model")]
    if metrics.get("status") != "complete" or not trained:
        return []
    return ["", "## The adapted model", "",
            f"[`stages/{trained[-1]}/model`](stages/{trained[-1]}/model) holds the last stage's model and tokenizer, "
            f"a plain transformers checkpoint (`AutoModelForCausalLM.from_pretrained`). "
            "`adaptlang export <this folder> --out DIR` writes it checked: reloaded, its logits compared "
            "with the run's (export.json)."]


def mixture_lines(stages: dict) -> list[str]:
    """The tokens each language got in every text stage: realized share and tokens, beside the
    target share and the epochs of its text where the stage mixes its languages (adaptlang.mixture;
    a stage without a mixture has no target: "—")."""
    text = {n: st["train"] for n, st in stages.items() if "tokens_by_language" in (st.get("train") or {})}
    if not text:
        return []
    lines = ["", "### Tokens per language: target and realized", "",
             "| stage | language | target share | realized share | tokens | epochs of its text |",
             "|---|---|---:|---:|---:|---:|"]
    for name, t in text.items():
        target, epochs = t.get("target_shares") or {}, t.get("epochs_by_language") or {}
        for code, tokens in t["tokens_by_language"].items():
            lines.append(f"| {name} | {code} | {_share(target.get(code))} | {_share(t['realized_shares'][code])} | "
                         f"{tokens:,} | {'—' if code not in epochs else f'{epochs[code]:.2f}'} |")
    return lines


def _share(value) -> str:
    return "—" if value is None else f"{value:.2%}"


def _figures(classes: dict) -> tuple[list[str], list[str]]:
    cols = list(classes)
    metrics = [m for m in next(iter(classes.values()), {}) if not m.startswith("n_")]
    return cols, metrics


def _benchmark_tables(metrics: dict) -> list[str]:
    """Class-level figures of every benchmark but perplexity, then forgetting (change from
    the baseline stage, adaptlang.forgetting)."""
    lines: list[str] = []
    stages = metrics["stages"]
    lines += _sample_lines(stages)
    benches = [b for st in stages.values() for b in st["eval"]
               if b != "perplexity" and st["eval"][b].get("classes")]
    for bench in dict.fromkeys(benches):
        rows = {n: st["eval"][bench] for n, st in stages.items() if bench in st["eval"]}
        cols, names = _figures(next(iter(rows.values()))["classes"])
        lines += ["", f"## {bench} by class", "", "| stage | metric | " + " | ".join(cols) + " |",
                  "|---|---|" + "---:|" * len(cols)]
        for stage, res in rows.items():
            for m in names:
                lines.append(f"| {stage} | {m} | " + " | ".join(fmt_metric(m, res["classes"].get(c, {}).get(m))
                                                               for c in cols) + " |")
        last = list(rows.values())[-1]
        if last.get("skipped"):
            lines += ["", "Skipped: " + "; ".join(f"{c} ({why})" for c, why in last["skipped"].items())]
        if last.get("signatures"):
            lines += ["", "Signatures: " + "; ".join(f"{k} `{v}`" for k, v in last["signatures"].items())]
        for task, counts in (last.get("dropped_flores_pool") or {}).items():
            lines += ["", f"{task}: test rows dropped because their text is in the FLORES training pool: "
                      + ", ".join(f"{c} {n}" for c, n in counts.items())]
        if last.get("leakage"):  # per task and language: evaluation texts found in the run's training sources
            lines += ["", "Leakage (evaluation documents equal to a line of the run's training text / of the FLORES "
                      "pool, of all documents):", ""]
            lines += [f"- {task}: " + ", ".join(f"{c} {v['in_training_text']}/{v['in_flores_pool']} of {v['n_eval']}"
                                                for c, v in per.items()) for task, per in last["leakage"].items()]
    lines += forgetting_tables(metrics)
    return lines


def _sample_lines(stages: dict) -> list[str]:
    """Each prompt of the ``samples`` benchmark with its greedy answer per stage."""
    per = {n: st["eval"]["samples"]["samples"] for n, st in stages.items() if "samples" in st.get("eval", {})}
    if not per:
        return []
    lines = ["", "## Greedy samples", ""]
    for label in dict.fromkeys(k for v in per.values() for k in v):
        prompt = next(v[label]["prompt"] for v in per.values() if label in v)
        lines += [f"**{label}**: {prompt}", "", "| stage | answer |", "|---|---|"]
        lines += [f"| {n} | {v[label]['answer'].replace('|', '/').replace(chr(10), ' ')} |"
                  for n, v in per.items() if label in v]
        lines.append("")
    return lines


def forgetting_tables(metrics: dict) -> list[str]:
    """The change of every class figure from the baseline stage (metrics["forgetting"],
    adaptlang.forgetting) with both values beside it; a perplexity's change in percent."""
    forg = metrics.get("forgetting")
    if not forg or not forg.get("deltas"):
        return []
    base = forg["baseline"]
    base_eval = metrics["stages"].get(base, {}).get("eval", {})
    lower = ", ".join(m for m, d in forg["direction"].items() if d == "lower") or "-"
    lines = ["", f"## Forgetting: change from stage `{base}`", "",
             "Per class: later − baseline, then (baseline → later); perplexities "
             f"({', '.join(LOG_SCALE)}) as relative change in percent, their values as log-ppl = ln(ppl) when too "
             f"large to read. * marks a change for the worse (lower is better: {lower}).", ""]
    for stage, benches in forg["deltas"].items():
        later_eval = metrics["stages"].get(stage, {}).get("eval", {})
        for bench, classes in benches.items():
            cols, names = _figures(classes)
            bad = forg.get("worse", {}).get(stage, {}).get(bench, {})
            before = base_eval.get(bench, {}).get("classes", {})
            after = later_eval.get(bench, {}).get("classes", {})
            lines += [f"**{stage} / {bench}**", "", "| metric | " + " | ".join(cols) + " |",
                      "|---|" + "---:|" * len(cols)]
            for m in names:
                cells = []
                for c in cols:
                    delta = classes.get(c, {}).get(m)
                    mark = "*" if m in bad.get(c, []) else ""
                    b, a = before.get(c, {}).get(m), after.get(c, {}).get(m)
                    if delta is None:
                        cells.append("–")
                    elif b is None or a is None:
                        cells.append(fmt_delta(delta) + mark)
                    else:
                        cells.append(fmt_change(m, b, a, mark))
                lines.append(f"| {m} | " + " | ".join(cells) + " |")
            lines.append("")
    return lines
