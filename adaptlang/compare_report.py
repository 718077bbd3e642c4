"""Rendering of a comparison (adaptlang.compare.build): Markdown, self-contained HTML
(plots inline as PNG data URIs), comparison.json and plots/*.png.

Plots (matplotlib, Agg backend): per-class delta bars against the baseline (Instruct-Align
Figure 2) and the metric by stage per class, one line per method (forgetting: AF paper
section 5, Instruct-Align section 5). One number format (``fmt``, adaptlang.compare_common)
for every table. Perplexities (adaptlang.forgetting.log_scale) are compared by relative
change in percent, and a perplexity table with values too large to read (``log_view``) shows
log-ppl = ln(ppl) instead: never an exponent or a twelve-digit number in a cell.
"""
from __future__ import annotations

import base64
import html
import io
import math
import re
from pathlib import Path

from .compare_common import (HEADLINE, PER_TOKEN, fmt, fmt_delta, fmt_log, fmt_pct, merge_orders,
                             ordered_union, short, too_large)
from .forgetting import log_scale
from .rundir import write_atomic, write_json

# ---------------------------------------------------------------- formatting
# (fmt, fmt_delta: adaptlang.compare_common, the one number format of every report table)

def log_view(table: dict, metric: str) -> bool:
    """Whether a perplexity table is shown as log-ppl (some mean is too large to read)."""
    return too_large(metric, *(c["mean"] for row in table["rows"].values() for c in row.values()))


def _fmt_log_delta(x: float | None) -> str:
    return "–" if x is None else ("+" if x >= 0 else "−") + fmt_log(abs(x))


def cell_text(cell: dict | None, log: bool = False) -> str:
    """mean ± std; ``log``: of the log-ppl (``log_mean`` ± ``log_std``)."""
    if not cell:
        return "–"
    if log:
        if cell.get("log_mean") is None:
            return "n/a"
        return fmt_log(cell["log_mean"]) + (f" ± {fmt_log(cell['log_std'])}" if cell.get("log_std") is not None else "")
    return fmt(cell["mean"]) + (f" ± {fmt(cell['std'])}" if cell["std"] is not None else "")


def delta_text(cell: dict | None, metric: str | None = None, log: bool = False) -> str:
    """Δ ± std; for a perplexity ``metric`` the relative change of the mean first, then Δ
    (``log``: Δ log-ppl) in parentheses: ``−3.90% (−4.870 ± 0.300)``."""
    if not cell or "delta" not in cell:
        return "–"
    if log:
        if cell.get("delta_log") is None:
            raw = "Δ log-ppl n/a"
        else:
            raw = "Δ log-ppl " + _fmt_log_delta(cell["delta_log"]) + (
                f" ± {fmt_log(cell['delta_log_std'])}" if cell.get("delta_log_std") is not None else "")
    else:
        raw = fmt_delta(cell["delta"]) + (f" ± {fmt(cell['delta_std'])}" if cell.get("delta_std") is not None else "")
    if metric is not None and log_scale(metric):
        return f"{fmt_pct(cell.get('delta_rel'))} ({raw})"
    return raw


def best_label(table: dict, cls: str, log: bool = False) -> str | None:
    d = table["direction"]
    key = "log_mean" if log else "mean"
    cells = {label: row[cls][key] for label, row in table["rows"].items() if row.get(cls, {}).get(key) is not None}
    if d is None or len(cells) < 2:
        return None
    pick = min if d == "lower" else max
    best = pick(cells, key=cells.get)
    if list(cells.values()).count(cells[best]) > 1:  # a tie (e.g. every method at 0): no best
        return None
    return best


def table_note(metric: str, log: bool) -> str:
    """What the cells of a perplexity table are (empty for other metrics)."""
    if not log_scale(metric):
        return ""
    if log:
        return (f"Perplexities too large to read: cells are log-ppl = ln({metric}) (mean ± std over seeds of the "
                f"natural log). Δ: relative change of the mean {metric}, then Δ log-ppl.")
    return f"Δ: relative change of the mean {metric}, then method − baseline."


def verdict(delta: float | None, metric_direction: str | None) -> str:
    """better / worse / same / '' (no direction)."""
    if delta is None or metric_direction is None:
        return ""
    if delta == 0:
        return "same"
    return "better" if (delta < 0) == (metric_direction == "lower") else "worse"


def headline_metrics(tables: dict) -> list[tuple[str, str]]:
    out = []
    for bench, metrics in tables.items():
        chosen = [m for m in metrics if m in HEADLINE] or list(metrics)[:1]
        out += [(bench, m) for m in chosen]
    return out


def _dir_note(d: str | None) -> str:
    return {"lower": "lower is better", "higher": "higher is better"}.get(d, "no known direction")


# ---------------------------------------------------------------- plots

def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    _plt().close(fig)
    return buf.getvalue()


STYLES = ("-", "--", "-.", ":")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def _style(comp: dict, label: str) -> dict:
    """The same colour (and line/marker style) for a method in every plot."""
    i = list(comp["methods"]).index(label)
    return {"color": f"C{i % 10}", "linestyle": STYLES[i % len(STYLES)], "marker": MARKERS[i % len(MARKERS)]}


def delta_bars(comp: dict, bench: str, metric: str) -> bytes | None:
    """Instruct-Align Figure 2: delta against the baseline per class, one bar per method."""
    table = comp["tables"][bench][metric]
    others = [label for label in table["rows"] if label != comp["baseline"]]
    if not others:
        return None
    plt = _plt()
    classes = table["classes"]
    log = log_view(table, metric)
    percent = log_scale(metric) and not log
    width = 0.8 / len(others)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.3 * len(classes) + 0.5 * len(others)), 3.4), layout="constrained")
    for i, label in enumerate(others):
        row = table["rows"][label]
        xs = [j + (i - (len(others) - 1) / 2) * width for j in range(len(classes))]
        cells = [row.get(c, {}) for c in classes]
        if log:  # Δ log-ppl
            ys = [math.nan if c.get("delta_log") is None else c["delta_log"] for c in cells]
            errs = [c.get("delta_log_std") or 0.0 for c in cells]
        elif percent:  # relative change of the mean perplexity
            ys = [math.nan if c.get("delta_rel") is None else 100 * c["delta_rel"] for c in cells]
            errs = [0.0 for c in cells]
        else:
            ys = [c.get("delta", math.nan) for c in cells]
            errs = [c.get("delta_std") or 0.0 for c in cells]
        ax.bar(xs, ys, width, yerr=errs if any(errs) else None, capsize=3, label=label,
               color=_style(comp, label)["color"])
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(classes)), classes)
    ax.set_ylabel(f"Δ ln({metric})" if log else f"Δ {metric} (%)" if percent else f"Δ {metric}")
    ax.set_title(f"{bench} {metric}: Δ vs {comp['baseline']} ({_dir_note(table['direction'])})", fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def stage_lines(comp: dict, bench: str, metric: str) -> bytes | None:
    """Metric by stage, one panel per class, one line per method (forgetting shows as a rise
    of a lower-is-better metric on the classes learned earlier)."""
    data = comp["by_stage"][bench][metric]
    classes = comp["tables"][bench][metric]["classes"]
    stages = merge_orders(st.keys() for per in data.values() for st in per.values())
    if len(stages) < 2:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, len(classes), figsize=(max(6.0, 3.0 * len(classes)), 3.4), squeeze=False,
                             layout="constrained")
    for ax, cls in zip(axes[0], classes):
        for label, per in data.items():
            pts = [(stages.index(s), v) for s, v in per.get(cls, {}).items()]
            if not pts:
                continue
            xs = [p[0] for p in pts]
            ys = [p[1]["mean"] for p in pts]
            line, = ax.plot(xs, ys, label=label, markersize=5, **_style(comp, label))
            sd = [p[1]["std"] or 0.0 for p in pts]
            if any(sd):
                ax.fill_between(xs, [y - s for y, s in zip(ys, sd)], [y + s for y, s in zip(ys, sd)],
                                color=line.get_color(), alpha=0.15)
        ax.set_xticks(range(len(stages)), stages, rotation=20, fontsize=8)
        ax.set_title(cls, fontsize=10)
        ax.grid(alpha=0.3)
    if log_scale(metric):  # perplexities grow geometrically
        for ax in axes[0]:
            ax.set_yscale("log")
    axes[0][0].set_ylabel(metric)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 6), fontsize=8)
    fig.suptitle(f"{bench} {metric} by stage ({_dir_note(comp['tables'][bench][metric]['direction'])})", fontsize=10)
    return _png(fig)


FRONTIER_TITLE = "Learning-forgetting frontier"


def frontier_caption(comp: dict) -> str:
    f = comp["frontier"]
    return (f"{FRONTIER_TITLE}: Δ {f['metric']} on the learned classes ({f['learned']}, x) against Δ on the kept "
            f"classes ({f['kept']}, y), from each run's starting model (stage base, else its first stage) to the "
            "compared stage; lower-left is better (learned more, forgot less)")


def frontier_plot(comp: dict) -> bytes | None:
    """One point per run (x: Δ on the learned classes, y: Δ on the kept classes); a grid over
    strategy.merge.weight is joined as a line, each point marked with its weight."""
    f = comp.get("frontier") or {}
    points = f.get("points") or []
    if not points:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.2), layout="constrained")
    by_run = {p["run"]: p for p in points}
    for line in f.get("lines", []):
        pts = [by_run[r] for r in line["points"]]
        ax.plot([p["learned"] for p in pts], [p["kept"] for p in pts], color="0.5", linewidth=1, zorder=1)
    shown = set()
    for p in points:
        style = _style(comp, p["method"])
        ax.scatter([p["learned"]], [p["kept"]], color=style["color"], marker=style["marker"], zorder=2,
                   label=None if p["method"] in shown else p["method"])
        shown.add(p["method"])
        if p.get("merge_weight") is not None:
            ax.annotate(f"w={p['merge_weight']:g}", (p["learned"], p["kept"]), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")
    ax.axhline(0, color="black", linewidth=0.6)
    ax.axvline(0, color="black", linewidth=0.6)
    ax.set_xlabel(f"Δ {f['metric']} on {f['learned']} (learning: lower is better)")
    ax.set_ylabel(f"Δ {f['metric']} on {f['kept']} (forgetting: lower is better)")
    ax.set_title(FRONTIER_TITLE, fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(alpha=0.3)
    return _png(fig)


def frontier_rows(comp: dict) -> list[list[str]]:
    f = comp.get("frontier") or {}
    if not f.get("points"):
        return []
    rows = [["run", "merge weight", "from → to", f"Δ {f['metric']} {f['learned']} (learned)",
             f"Δ {f['metric']} {f['kept']} (kept)"]]
    for p in f["points"]:
        w = p.get("merge_weight")
        rows.append([p["run"], "–" if w is None else f"{w:g}", f"{p['from']} → {p['to']}",
                     f"{p['learned']:+.4f}", f"{p['kept']:+.4f}"])
    return rows


def make_plots(comp: dict) -> dict[str, tuple[str, bytes]]:
    """file stem -> (caption, PNG bytes)."""
    plots = {}
    png = frontier_plot(comp)
    if png:
        plots["frontier"] = (frontier_caption(comp), png)
    for bench, metric in headline_metrics(comp["tables"]):
        png = delta_bars(comp, bench, metric)
        if png:
            plots[f"delta-{bench}-{metric}"] = (f"{bench} {metric}: Δ against the baseline per class", png)
        png = stage_lines(comp, bench, metric)
        if png:
            plots[f"stages-{bench}-{metric}"] = (f"{bench} {metric} by stage (forgetting)", png)
    return plots


# ---------------------------------------------------------------- report text

def _setup_lines(comp: dict) -> list[tuple[str, list]]:
    """(heading, rows) blocks shared by Markdown and HTML: what was compared."""
    blocks = []
    rows = [["method", "run", "seed", "status", "stage compared", "strategies", "parameters at stage (total / trainable)",
             "vocabulary", "steps per stage", "tokens trained"]]
    for label, info in comp["methods"].items():
        for r in info["runs"]:
            p, sp = r["parameters"], r["stage_parameters"]
            rows.append([label + (" (baseline)" if label == comp["baseline"] else ""), r["name"], str(r["seed"]),
                         r["status"], r["stage"], " + ".join(r["strategies"]) or "none",
                         f"{_int(sp.get('total', p.get('total')))} / {_int(sp.get('trainable', p.get('trainable')))}",
                         _int(r["vocab_size"]),
                         ", ".join(f"{s} {n}" for s, n in r["steps"].items()),
                         f"{sum(v for v in r['tokens'].values() if v):,}"])
    blocks.append(("Runs", rows))
    if comp["config_differences"]:
        labels = list(comp["methods"])
        rows = [["config key", *labels]]
        for key, values in comp["config_differences"].items():
            rows.append([key, *[short(values.get(label)) for label in labels]])
        blocks.append(("Config differences between methods", rows))
    return blocks


def _int(v) -> str:
    return f"{v:,}" if isinstance(v, int) else "?"




def _common_text(comp: dict) -> list[str]:
    c = comp["common"]
    lines = []
    if c["model"]:
        lines.append("Model (baseline's config): " + ", ".join(f"{k} {v}" for k, v in c["model"].items())
                     + (f", tokenizer vocabulary {c['tokenizer_vocab']}" if c.get("tokenizer_vocab") else ""))
    if c["classes"]:
        lines.append("Language classes: " + "; ".join(f"{k} ({len(v)}): {' '.join(map(str, v))}"
                                                     for k, v in c["classes"].items()))
    if c["experiment_stages"]:
        lines.append("Stages (baseline's experiment): " + "; ".join(
            f"{s['name']}: {(s['data'] or {}).get('kind')} on {(s['data'] or {}).get('languages')}, {s['steps']} steps"
            for s in c["experiment_stages"])
                     + (f" (every stage capped at train.max_steps={c['max_steps']})" if c.get("max_steps") else ""))
    if c["data"]:
        lines.append(f"Data: {c['data'].get('max_lines_per_language')} training lines per language; "
                     f"own files: {c['data'].get('train_files') or 'none'}")
    if c["eval"]:
        lines.append(f"Evaluation: benchmarks {c['eval'].get('benchmarks')}, "
                     f"{c['eval'].get('max_sentences')} held-out sentences per language")
    note = _tokenizer_note(comp, "ppl_token")
    if note:
        lines.append(note)
    envs = list(comp["environment"].values())
    keys = ordered_union(e.keys() for e in envs)
    same = {k: envs[0].get(k) for k in keys if all(e.get(k) == envs[0].get(k) for e in envs)}
    lines.append("Environment (all runs): " + ", ".join(f"{k} {v}" for k, v in same.items()))
    for k in keys:
        if k not in same:
            lines.append(f"Environment differs in {k}: " + ", ".join(f"{n} {e.get(k)}" for n, e in comp["environment"].items()))
    return lines


def _tokenizer_note(comp: dict, metric: str) -> str:
    vocabs = {r["vocab_size"] for info in comp["methods"].values() for r in info["runs"]}
    if metric not in PER_TOKEN or len(vocabs) < 2:
        return ""
    return (f"Vocabulary sizes differ at the compared stage ({', '.join(map(str, sorted(vocabs, key=str)))}): "
            f"{metric} is per token and not comparable across tokenizers; compare per-character figures "
            "(bits_per_char).")


def _compare_command(comp: dict, out: Path | None) -> str:
    paths = [r["path"] for info in comp["methods"].values() for r in info["runs"]]
    base = comp["methods"][comp["baseline"]]["runs"][0]["path"]
    cmd = "adaptlang compare " + " ".join(paths) + f" --baseline {base}"
    if comp["stage_option"]:
        cmd += f" --stage {comp['stage_option']}"
    if out is not None:
        cmd += f" --out {out}"
    return cmd


def _md_table(rows: list[list[str]], numeric_from: int = 1) -> list[str]:
    esc = [[str(c).replace("|", "\\|") for c in row] for row in rows]
    head = "| " + " | ".join(esc[0]) + " |"
    sep = "|" + "|".join("---" if i < numeric_from else "---:" for i in range(len(esc[0]))) + "|"
    return [head, sep] + ["| " + " | ".join(r) + " |" for r in esc[1:]]


def _seeds_text(info: dict) -> str:
    return ", ".join(map(str, info["seeds"]))


def value_rows(comp: dict, bench: str, metric: str, markdown: bool = True) -> list[list[str]]:
    table = comp["tables"][bench][metric]
    rows = [["method", "seeds", *table["classes"]]]
    log = log_view(table, metric)
    best = {cls: best_label(table, cls, log) for cls in table["classes"]}
    for label, row in table["rows"].items():
        cells = []
        for cls in table["classes"]:
            t = cell_text(row.get(cls), log)
            cells.append(f"**{t}**" if markdown and best[cls] == label else t)
        rows.append([label, _seeds_text(comp["methods"][label]), *cells])
    return rows


def delta_rows(comp: dict, bench: str, metric: str) -> list[list[str]]:
    table = comp["tables"][bench][metric]
    log = log_view(table, metric)
    rows = [["method", *table["classes"]]]
    for label, row in table["rows"].items():
        if label != comp["baseline"]:
            rows.append([label, *[delta_text(row.get(cls), metric, log) for cls in table["classes"]]])
    return rows


def from_base_rows(comp: dict, bench: str, metric: str) -> list[list[str]]:
    """Per method, the change of each class from the run's starting model (stage ``base``):
    compared stage - base, mean over the runs that evaluated their starting model."""
    table = comp["tables"][bench][metric]
    per = (comp.get("from_base") or {}).get(bench, {}).get(metric, {})
    if not per:
        return []
    rows = [["method", *table["classes"]]]
    for label, classes in per.items():
        rows.append([label] + [_fmt_log_delta(classes[c]["mean"]) if c in classes else "–" for c in table["classes"]])
    return rows


def _split_metrics(comp: dict) -> tuple[list, list]:
    head = headline_metrics(comp["tables"])
    rest = [(b, m) for b, ms in comp["tables"].items() for m in ms if (b, m) not in head]
    return head, rest


def to_markdown(comp: dict, plot_files: dict[str, str], out: Path | None = None) -> str:
    lines = [f"# adaptlang comparison against `{comp['baseline']}`", "",
             f"Methods: {', '.join(f'`{m}`' for m in comp['methods'])}. Baseline: `{comp['baseline']}`. "
             f"Stage compared: {comp['stage_option'] or 'each run' + chr(39) + 's last evaluated stage'}. "
             "Cells: mean over seeds ± sample standard deviation (when several seeds); "
             "Δ = method − baseline (paired by seed when both have the same seeds). Bold: best mean of a column.", ""]
    lines += [f"> **Warning:** {w}." for w in comp.get("warnings", [])] + ([""] if comp.get("warnings") else [])
    def tables(pairs):
        out = []
        for bench, metric in pairs:
            table = comp["tables"][bench][metric]
            note = _tokenizer_note(comp, metric)
            shown = table_note(metric, log_view(table, metric))
            out += [f"### {bench} · {metric} ({_dir_note(table['direction'])})", "",
                    *([f"*{note}*", ""] if note else []),
                    *([f"*{shown}*", ""] if shown else []),
                    *_md_table(value_rows(comp, bench, metric), numeric_from=2), ""]
            if len(table["rows"]) > 1:
                out += [f"Δ {metric} vs `{comp['baseline']}`:", "", *_md_table(delta_rows(comp, bench, metric)), ""]
        return out

    head, rest = _split_metrics(comp)
    lines += ["## Results", "", *tables(head)]
    for bench, metric in head:
        rows = from_base_rows(comp, bench, metric)
        if rows:
            lines += [f"### {bench} · {metric}: change from the starting model (`base`)", "",
                      *_md_table(rows), ""]
    rows = frontier_rows(comp)
    if rows:
        lines += [f"### {FRONTIER_TITLE}", "", f"*{frontier_caption(comp)}.*", "", *_md_table(rows, numeric_from=3), ""]
    if plot_files:
        lines += ["## Plots", ""]
        for stem, (caption, rel) in plot_files.items():
            lines += [f"![{caption}]({rel})", ""]
    if rest:
        lines += ["## More metrics", "", *tables(rest)]
    lines += ["## What was compared", ""]
    for heading, rows in _setup_lines(comp):
        lines += [f"### {heading}", "", *_md_table(rows, numeric_from=99), ""]
    lines += [f"- {t}" for t in _common_text(comp)] + [""]
    lines += ["## Reproduce", "", "Each run from its resolved config:", "", "```console"]
    lines += [r["rerun"] for info in comp["methods"].values() for r in info["runs"]]
    lines += ["```", "", "This comparison:", "", "```console", _compare_command(comp, out), "```", ""]
    return "\n".join(lines)


CSS = """body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1150px;
color:#222;line-height:1.4;padding:0 16px}h1{font-size:1.5em}h2{border-bottom:1px solid #ccc;padding-bottom:3px;
margin-top:1.6em}h3{font-size:1.05em;margin-bottom:.4em}table{border-collapse:collapse;margin:.4em 0 1em;
font-size:13px}th,td{border:1px solid #d0d0d0;padding:3px 8px}th{background:#f2f2f2}td.num{text-align:right;
font-variant-numeric:tabular-nums;white-space:nowrap}tr.baseline td{background:#f7f7ff}td.best{font-weight:bold}
td.better{color:#106b21}td.worse{color:#b3261e}img{max-width:100%;border:1px solid #eee;margin:4px 0}
figure{margin:10px 0}figcaption{font-size:12px;color:#555}code,pre{background:#f6f6f6;font-size:12px}
pre{padding:8px;overflow-x:auto}.note{color:#555;font-size:13px}.warn{color:#8a5300;font-size:13px}.wide{overflow-x:auto}"""


def _html_table(rows: list[list[str]], numeric_from: int, classes: list[list[str]] | None = None,
                row_classes: list[str] | None = None) -> str:
    e = html.escape
    out = ['<div class="wide"><table><tr>' + "".join(f"<th>{e(c)}</th>" for c in rows[0]) + "</tr>"]
    for i, row in enumerate(rows[1:]):
        rc = f' class="{row_classes[i]}"' if row_classes and row_classes[i] else ""
        cells = []
        for j, c in enumerate(row):
            cls = ["num"] if j >= numeric_from else []
            if classes and classes[i][j]:
                cls.append(classes[i][j])
            attr = f' class="{" ".join(cls)}"' if cls else ""
            cells.append(f"<td{attr}>{e(str(c))}</td>")
        out.append(f"<tr{rc}>" + "".join(cells) + "</tr>")
    return "\n".join(out) + "</table></div>"


def to_html(comp: dict, plots: dict[str, tuple[str, bytes]], out: Path | None = None) -> str:
    e = html.escape
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
             f"<title>adaptlang comparison: {e(comp['baseline'])}</title><style>{CSS}</style></head><body>",
             f"<h1>adaptlang comparison against <code>{e(comp['baseline'])}</code></h1>",
             f"<p class=\"note\">Methods: {e(', '.join(comp['methods']))}. Stage compared: "
             f"{e(comp['stage_option'] or 'each run’s last evaluated stage')}. Cells: mean over seeds ± sample "
             "standard deviation (several seeds); Δ = method − baseline (paired by seed when both have the same "
             "seeds). Bold: best mean of a column; green/red: Δ better/worse than the baseline.</p>"]
    parts += [f'<p class="warn"><b>Warning:</b> {e(w)}.</p>' for w in comp.get("warnings", [])]
    def tables(pairs):
        for bench, metric in pairs:
            table = comp["tables"][bench][metric]
            parts.append(f"<h3>{e(bench)} · {e(metric)} <span class=\"note\">({_dir_note(table['direction'])})</span></h3>")
            note = _tokenizer_note(comp, metric)
            if note:
                parts.append(f'<p class="warn">{e(note)}</p>')
            shown = table_note(metric, log_view(table, metric))
            if shown:
                parts.append(f'<p class="note">{e(shown)}</p>')
            rows = value_rows(comp, bench, metric, markdown=False)
            best = {c: best_label(table, c, log_view(table, metric)) for c in table["classes"]}
            marks = [["", "", *["best" if best[c] == label else "" for c in table["classes"]]] for label in table["rows"]]
            rcs = ["baseline" if label == comp["baseline"] else "" for label in table["rows"]]
            parts.append(_html_table(rows, 2, marks, rcs))
            if len(table["rows"]) > 1:
                drows = delta_rows(comp, bench, metric)
                marks = [["", *[verdict(table["rows"][label].get(c, {}).get("delta"), table["direction"])
                                 for c in table["classes"]]] for label in table["rows"] if label != comp["baseline"]]
                parts.append(f"<p class=\"note\">Δ {e(metric)} vs {e(comp['baseline'])}</p>")
                parts.append(_html_table(drows, 1, marks))

    head, rest = _split_metrics(comp)
    parts.append("<h2>Results</h2>")
    tables(head)
    for bench, metric in head:
        rows = from_base_rows(comp, bench, metric)
        if rows:
            parts.append(f"<h3>{e(bench)} · {e(metric)}: change from the starting model (base)</h3>")
            parts.append(_html_table(rows, 1))
    rows = frontier_rows(comp)
    if rows:
        parts += [f"<h3>{e(FRONTIER_TITLE)}</h3>", f'<p class="note">{e(frontier_caption(comp))}.</p>',
                  _html_table(rows, 3)]
    if plots:
        parts.append("<h2>Plots</h2>")
        for caption, png in plots.values():
            data = base64.b64encode(png).decode("ascii")
            parts.append(f'<figure><img alt="{e(caption)}" src="data:image/png;base64,{data}">'
                         f"<figcaption>{e(caption)}</figcaption></figure>")
    if rest:
        parts.append("<h2>More metrics</h2>")
        tables(rest)
    parts.append("<h2>What was compared</h2>")
    for heading, rows in _setup_lines(comp):
        parts += [f"<h3>{e(heading)}</h3>", _html_table(rows, 99)]
    parts.append("<ul>" + "".join(f"<li>{e(t)}</li>" for t in _common_text(comp)) + "</ul>")
    reruns = [r["rerun"] for info in comp["methods"].values() for r in info["runs"]]
    parts += ["<h2>Reproduce</h2><p>Each run from its resolved config:</p>",
              f"<pre>{e(chr(10).join(reruns))}</pre><p>This comparison:</p>",
              f"<pre>{e(_compare_command(comp, out))}</pre></body></html>"]
    return "\n".join(parts)


def write(comp: dict, out: Path, plots: bool = True) -> Path:
    """Write report.md, report.html, comparison.json and plots/*.png (``plots=False``: no plots)."""
    out = Path(out)
    plots = make_plots(comp) if plots else {}
    (out / "plots").mkdir(parents=True, exist_ok=True)
    files = {}
    for stem, (caption, png) in plots.items():
        stem = re.sub(r"[^A-Za-z0-9_.+=-]+", "_", stem)  # benchmark and metric names come from the runs' files
        (out / "plots" / f"{stem}.png").write_bytes(png)
        files[stem] = (caption, f"plots/{stem}.png")
    write_json(out / "comparison.json", comp)
    write_atomic(out / "report.md", to_markdown(comp, files, out))
    write_atomic(out / "report.html", to_html(comp, plots, out))
    return out
