"""Comparison reports: several runs against a baseline, in the shape of the papers' tables.

    adaptlang compare runs/mlm-s0 runs/mlm-s1 runs/xling+replay-s0 runs/xling+replay-s1 \
        --baseline runs/mlm-s0 [--stage instruct] [--out runs/compare-x]

Writes ``report.md``, ``report.html`` (self-contained: the plots are PNG data URIs),
``comparison.json`` (every number of the tables) and ``plots/*.png`` to the output folder.

What is compared, exactly:

* **Methods.** Runs whose resolved configs (``config.yaml``) are equal except for ``seed``,
  ``name``, ``output_dir`` and ``overwrite`` are seeds of one *method*; its label is the
  run name without its ``-s<seed>`` suffix (``xling+replay-s1`` -> ``xling+replay``).
  The baseline is a method too (all its seeds); by default the one whose strategies are
  exactly ``[mlm]`` (monolingual denoising, Instruct-Align section 4.4), else the first.
* **Tables** (AF paper Tables 1-3, Instruct-Align Tables 4-5): rows = methods, columns =
  the language classes of the benchmark result (``classes`` of every benchmark under
  ``stages.<stage>.eval`` of ``metrics.json``: perplexity, and any other benchmark with the
  same ``{"languages", "classes", "skipped"}`` shape), ``overall`` last; one table per
  benchmark metric. A cell is the mean over the method's seeds, ``± sample standard
  deviation`` (n-1) when there are several. The best mean of a column is bold when the
  metric's direction is known (``DIRECTIONS``).
* **Deltas** against the baseline, signed, ``method - baseline``: when the method and the
  baseline have the same seeds the per-seed differences are paired (mean ± std of the
  paired differences), otherwise difference of the means (± the method's std).
* **Plots**: per-class delta bars (Instruct-Align Figure 2: delta of each method against
  the baseline per language group) and metric-by-stage lines per class (forgetting: AF
  paper section 5 and Instruct-Align section 5 discuss the drop on the languages known
  before adaptation), for the headline metrics (``HEADLINE``) of every benchmark.
* **Stage**: by default each run's last evaluated stage (named per method in the report);
  ``stage=`` compares one named stage in every run.

Deviations: the papers report one run per configuration (Instruct-Align) or do not state
seeds (AF paper); means and standard deviations over seeds are our addition.
"""
from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import math
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import UserError, listing, suggest
from .rundir import write_atomic, write_json

# Which way is better, per metric name (a metric not listed: no direction, no bold/colour).
# Perplexity family and Ethayarajh self-similarity (the AF paper's "isotropy", Table 2:
# lower = better contextualised): lower; task scores: higher.
DIRECTIONS = {
    "ppl_token": "lower", "bits_per_char": "lower", "ppl_char": "lower", "bits_per_byte": "lower",
    "self_similarity": "lower", "adjusted_self_similarity": "lower",
    "accuracy": "higher", "weighted_f1": "higher", "f1": "higher", "macro_f1": "higher",
    "bleu": "higher", "chrf": "higher",
}
# Per-token figures: not comparable between models with different tokenizers.
PER_TOKEN = ("ppl_token",)
# Metrics that get plots (a benchmark with none of these: its first metric).
HEADLINE = ("ppl_token", "bits_per_char", "self_similarity", "bleu", "chrf", "accuracy", "weighted_f1")
IGNORED_CONFIG_KEYS = ("seed", "name", "output_dir", "overwrite")


def direction(metric: str) -> str | None:
    return DIRECTIONS.get(metric)


@dataclass
class Run:
    path: Path
    metrics: dict
    config: dict | None

    @property
    def name(self) -> str:
        return str(self.metrics.get("run") or self.path.name)

    @property
    def seed(self):
        return self.metrics.get("seed")

    @property
    def stem(self) -> str:
        """The run name without its ``-s<seed>`` suffix."""
        suffix = f"-s{self.seed}"
        return self.name[: -len(suffix)] if self.seed is not None and self.name.endswith(suffix) else self.name

    def evaluated_stages(self) -> list[str]:
        return [s for s, st in self.metrics.get("stages", {}).items() if st.get("eval")]

    def method_key(self) -> str:
        """Equal for runs that differ only in seed (and name/output folder)."""
        if self.config is None:
            return json.dumps([self.stem, self.metrics.get("strategies")])
        cfg = {k: v for k, v in self.config.items() if k not in IGNORED_CONFIG_KEYS}
        return json.dumps(cfg, sort_keys=True, default=str)


@dataclass
class Method:
    label: str
    runs: list[Run] = field(default_factory=list)
    stages: dict[str, str] = field(default_factory=dict)  # run name -> stage compared

    @property
    def seeds(self) -> list:
        return [r.seed for r in self.runs]


def load_run(path: str | Path) -> Run:
    path = Path(path)
    file = path / "metrics.json"
    if not file.is_file():
        raise UserError(f"{path}: not a run directory (no metrics.json); a run directory is runs/<name>/")
    try:
        metrics = json.loads(file.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise UserError(f"{file}: not valid JSON ({exc})") from None
    if not isinstance(metrics, dict) or not isinstance(metrics.get("stages"), dict):
        raise UserError(f"{file}: no 'stages' section (schema adaptlang.metrics/1 expected)")
    config = None
    if (path / "config.yaml").is_file():
        config = yaml.safe_load((path / "config.yaml").read_text(encoding="utf-8"))
    run = Run(path, metrics, config)
    if not run.evaluated_stages():
        raise UserError(f"{path}: no evaluated stage in metrics.json (status: {metrics.get('status', '?')})")
    return run


def group_methods(runs: list[Run]) -> list[Method]:
    by_key: dict[str, Method] = {}
    for run in runs:
        key = run.method_key()
        if key not in by_key:
            by_key[key] = Method(label=run.stem)
        by_key[key].runs.append(run)
    methods = list(by_key.values())
    seen: dict[str, int] = {}
    for m in methods:  # two different configs with the same name stem: keep both, distinguishable
        seen[m.label] = seen.get(m.label, 0) + 1
        if seen[m.label] > 1:
            m.label = f"{m.label} ({seen[m.label]})"
    return methods


def _stage_for(run: Run, stage: str | None) -> str:
    stages = run.evaluated_stages()
    if stage is None:
        return stages[-1]
    if stage not in stages:
        raise UserError(f"--stage {stage}: run {run.path} has no evaluated stage '{stage}'.{suggest(stage, stages)} "
                        f"Its stages: {listing(stages)}")
    return stage


def _numeric(figures: dict) -> dict[str, float]:
    return {k: float(v) for k, v in figures.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and not k.startswith("n_")}


def _merge_orders(sequences) -> list:
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


def _ordered_union(lists) -> list:
    out: list = []
    for items in lists:
        for x in items:
            if x not in out:
                out.append(x)
    return out


def summarize(values: list[float]) -> dict:
    """mean, sample std (n-1; None for one value), n."""
    mean = sum(values) / len(values)
    std = statistics.stdev(values) if len(values) > 1 else None
    return {"mean": mean, "std": std, "n": len(values)}


def _class_figures(run: Run, stage: str) -> dict[str, dict[str, dict[str, float]]]:
    """benchmark -> class -> metric -> value, for one run's stage."""
    out = {}
    for bench, result in run.metrics["stages"][stage].get("eval", {}).items():
        if isinstance(result, dict) and isinstance(result.get("classes"), dict):
            out[bench] = {cls: _numeric(fig) for cls, fig in result["classes"].items() if isinstance(fig, dict)}
    return out


def build(run_paths: list[str | Path], baseline: str | Path | None = None, stage: str | None = None) -> dict:
    """Load the runs and compute everything the report shows (returned as JSON-able dict)."""
    if not run_paths:
        raise UserError("compare needs at least one run directory: adaptlang compare RUN... [--baseline RUN]")
    paths = [Path(p) for p in run_paths]
    if baseline is not None and Path(baseline).resolve() not in [p.resolve() for p in paths]:
        paths.append(Path(baseline))
    runs, seen = [], set()
    for p in paths:
        if p.resolve() in seen:
            continue
        seen.add(p.resolve())
        runs.append(load_run(p))
    methods = group_methods(runs)
    for m in methods:
        m.stages = {r.name: _stage_for(r, stage) for r in m.runs}
    if baseline is not None:
        base = next(m for m in methods if any(r.path.resolve() == Path(baseline).resolve() for r in m.runs))
    else:
        base = next((m for m in methods if m.runs[0].metrics.get("strategies") == ["mlm"]), methods[0])
    methods.remove(base)
    methods.insert(0, base)

    figures = {m.label: [_class_figures(r, m.stages[r.name]) for r in m.runs] for m in methods}
    benchmarks = _ordered_union(f.keys() for fs in figures.values() for f in fs)
    tables: dict = {}
    for bench in benchmarks:
        classes = _ordered_union(f.get(bench, {}).keys() for fs in figures.values() for f in fs)
        if "overall" in classes:
            classes.remove("overall")
            classes.append("overall")
        metrics = _ordered_union(c.keys() for fs in figures.values() for f in fs for c in f.get(bench, {}).values())
        for metric in metrics:
            rows = {}
            for m in methods:
                row = {}
                for cls in classes:
                    values, seeds = [], []
                    for r, f in zip(m.runs, figures[m.label]):
                        v = f.get(bench, {}).get(cls, {}).get(metric)
                        if v is not None and math.isfinite(v):
                            values.append(v)
                            seeds.append(r.seed)
                    if values:
                        row[cls] = {**summarize(values), "values": values, "seeds": seeds}
                rows[m.label] = row
            _add_deltas(rows, base.label)
            tables.setdefault(bench, {})[metric] = {"direction": direction(metric), "classes": classes, "rows": rows}
    return {
        "schema": "adaptlang.compare/1",
        "baseline": base.label,
        "stage_option": stage,
        "methods": {m.label: _method_info(m) for m in methods},
        "tables": tables,
        "by_stage": _by_stage(methods, tables),
        "environment": {r.name: r.metrics.get("environment", {}) for m in methods for r in m.runs},
        "config_differences": _config_differences(methods),
        "common": _common_setup(methods),
    }


def _add_deltas(rows: dict, base_label: str) -> None:
    base = rows.get(base_label, {})
    for label, row in rows.items():
        for cls, cell in row.items():
            if label == base_label or cls not in base:
                continue
            b = base[cls]
            if sorted(map(str, cell["seeds"])) == sorted(map(str, b["seeds"])) and len(set(map(str, b["seeds"]))) == len(b["seeds"]):
                by_seed = dict(zip(map(str, b["seeds"]), b["values"]))
                diffs = [v - by_seed[str(s)] for s, v in zip(cell["seeds"], cell["values"])]
                s = summarize(diffs)
                cell["delta"], cell["delta_std"], cell["delta_paired"] = s["mean"], s["std"], True
            else:
                cell["delta"], cell["delta_std"], cell["delta_paired"] = cell["mean"] - b["mean"], cell["std"], False


def _by_stage(methods: list[Method], tables: dict) -> dict:
    """benchmark -> metric -> method -> class -> stage -> summary (every evaluated stage)."""
    out: dict = {}
    for bench, metrics in tables.items():
        for metric, table in metrics.items():
            for m in methods:
                per: dict = {}
                for r in m.runs:
                    for stage in r.evaluated_stages():
                        figs = _class_figures(r, stage).get(bench, {})
                        for cls in table["classes"]:
                            v = figs.get(cls, {}).get(metric)
                            if v is not None and math.isfinite(v):
                                per.setdefault(cls, {}).setdefault(stage, []).append(v)
                out.setdefault(bench, {}).setdefault(metric, {})[m.label] = {
                    cls: {st: summarize(vals) for st, vals in stages.items()} for cls, stages in per.items()}
    return out


def _method_info(m: Method) -> dict:
    runs = []
    for r in m.runs:
        stage = m.stages[r.name]
        st = r.metrics["stages"][stage]
        runs.append({
            "name": r.name, "path": str(r.path), "seed": r.seed, "status": r.metrics.get("status", "?"),
            "stage": stage, "strategies": r.metrics.get("strategies", []),
            "parameters": r.metrics.get("model", {}).get("parameters", {}),
            "stage_parameters": st.get("parameters", {}),
            "vocab_size": _vocab_at(r, stage),
            "model_source": r.metrics.get("model", {}).get("source"),
            "steps": {s: v.get("train", {}).get("steps") for s, v in r.metrics["stages"].items()},
            "tokens": {s: v.get("train", {}).get("tokens") for s, v in r.metrics["stages"].items()},
            "seconds": r.metrics.get("seconds"),
            "rerun": _rerun_command(r),
        })
    return {"runs": runs, "seeds": m.seeds, "strategies": m.runs[0].metrics.get("strategies", [])}


def _vocab_at(run: Run, stage: str):
    """The vocabulary size of the model evaluated at ``stage`` (the vocab strategy grows it)."""
    size = run.metrics.get("model", {}).get("vocab_size")
    for name, st in run.metrics["stages"].items():
        size = ((st.get("strategy_notes") or {}).get("vocab") or {}).get("vocab_size_after", size)
        if name == stage:
            break
    return size


def _rerun_command(run: Run) -> str:
    if not (run.path / "config.yaml").is_file():
        return "(no config.yaml: cannot be rerun from its directory)"
    cmd = f"adaptlang run --config {run.path / 'config.yaml'} output_dir=rerun"
    if run.config is not None and not run.config.get("name"):
        cmd += f" name={run.name}"
    return cmd


def _flatten(obj, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out or {prefix[:-1]: {}}
    return {prefix[:-1]: json.dumps(obj) if isinstance(obj, list) else obj}


def _config_differences(methods: list[Method]) -> dict:
    """dotted key -> method -> value, for keys whose values differ between methods. The
    options of a strategy that not every method has are summed up by the ``strategy`` row."""
    if len(methods) < 2 or any(not m.runs[0].config for m in methods):
        return {}
    configs = {m.label: {k: v for k, v in m.runs[0].config.items() if k not in IGNORED_CONFIG_KEYS} for m in methods}
    names = {label: list((c.get("strategy") or {}).keys()) for label, c in configs.items()}
    shared = set.intersection(*[set(n) for n in names.values()])
    out = {}
    if len({tuple(n) for n in names.values()}) > 1:
        out["strategy"] = {label: "+".join(n) or "none" for label, n in names.items()}
    for name in _ordered_union(names.values()):  # a strategy not every method has: its options in one row
        if name not in shared:
            out[f"strategy.{name}"] = {
                label: " ".join(f"{k}={_short(v, 30)}" for k, v in c["strategy"][name].items())
                if name in (c.get("strategy") or {}) else "(absent)" for label, c in configs.items()}
    flat = {}
    for label, c in configs.items():
        c = dict(c)
        c["strategy"] = {k: v for k, v in (c.get("strategy") or {}).items() if k in shared}
        stages = (c.get("experiment") or {}).get("stages")
        if isinstance(stages, list):  # one readable row per stage instead of a JSON list
            c["experiment"] = {k: v for k, v in c["experiment"].items() if k != "stages"}
            c["experiment"]["stages"] = {str(st.get("name")): {k: v for k, v in st.items() if k != "name"}
                                         for st in stages if isinstance(st, dict)}
        flat[label] = _flatten(c)
    for key in _ordered_union(f.keys() for f in flat.values()):
        values = {label: f.get(key, "(absent)") for label, f in flat.items()}
        if len({json.dumps(v, default=str) for v in values.values()}) > 1:
            out[key] = values
    return out


def _common_setup(methods: list[Method]) -> dict:
    cfg = methods[0].runs[0].config or {}
    model = cfg.get("model") or {}
    classes = (cfg.get("languages") or {}).get("classes") or {}
    return {
        "model": {k: model.get(k) for k in ("name_or_path", "architecture", "hidden_size", "intermediate_size",
                                             "num_hidden_layers", "num_attention_heads", "tie_word_embeddings")
                  if model.get(k) is not None},
        "tokenizer_vocab": (model.get("tokenizer") or {}).get("vocab_size"),
        "classes": classes,
        "data": cfg.get("data") or {},
        "eval": cfg.get("eval") or {},
        "max_steps": (cfg.get("train") or {}).get("max_steps"),
        "experiment_stages": [{"name": s.get("name"), "data": s.get("data"), "steps": s.get("steps")}
                              for s in (cfg.get("experiment") or {}).get("stages", [])],
    }


# ---------------------------------------------------------------- formatting

def fmt(x: float | None) -> str:
    """The one number format of the report (tests parse it back)."""
    if x is None:
        return "–"
    if abs(x) >= 1e5:
        return f"{x:.4g}"
    if abs(x) >= 100:
        return f"{x:.2f}"
    if x == 0 or abs(x) >= 0.01:
        return f"{x:.3f}"
    return f"{x:.2e}"  # small differences stay visible


def fmt_delta(x: float | None) -> str:
    if x is None:
        return "–"
    return "+" + fmt(x) if x >= 0 else "−" + fmt(-x)


def cell_text(cell: dict | None) -> str:
    if not cell:
        return "–"
    return fmt(cell["mean"]) + (f" ± {fmt(cell['std'])}" if cell["std"] is not None else "")


def delta_text(cell: dict | None) -> str:
    if not cell or "delta" not in cell:
        return "–"
    return fmt_delta(cell["delta"]) + (f" ± {fmt(cell['delta_std'])}" if cell.get("delta_std") is not None else "")


def best_label(table: dict, cls: str) -> str | None:
    d = table["direction"]
    cells = {label: row[cls]["mean"] for label, row in table["rows"].items() if cls in row}
    if d is None or len(cells) < 2:
        return None
    pick = min if d == "lower" else max
    return pick(cells, key=cells.get)


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
    width = 0.8 / len(others)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.3 * len(classes) + 0.5 * len(others)), 3.4), layout="constrained")
    for i, label in enumerate(others):
        row = table["rows"][label]
        xs = [j + (i - (len(others) - 1) / 2) * width for j in range(len(classes))]
        ys = [row.get(c, {}).get("delta", math.nan) for c in classes]
        errs = [row.get(c, {}).get("delta_std") or 0.0 for c in classes]
        ax.bar(xs, ys, width, yerr=errs if any(errs) else None, capsize=3, label=label,
               color=_style(comp, label)["color"])
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(classes)), classes)
    ax.set_ylabel(f"Δ {metric}")
    ax.set_title(f"{bench} {metric}: Δ vs {comp['baseline']} ({_dir_note(table['direction'])})", fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def stage_lines(comp: dict, bench: str, metric: str) -> bytes | None:
    """Metric by stage, one panel per class, one line per method (forgetting shows as a rise
    of a lower-is-better metric on the classes learned earlier)."""
    data = comp["by_stage"][bench][metric]
    classes = comp["tables"][bench][metric]["classes"]
    stages = _merge_orders(st.keys() for per in data.values() for st in per.values())
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
    axes[0][0].set_ylabel(metric)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 6), fontsize=8)
    fig.suptitle(f"{bench} {metric} by stage ({_dir_note(comp['tables'][bench][metric]['direction'])})", fontsize=10)
    return _png(fig)


def make_plots(comp: dict) -> dict[str, tuple[str, bytes]]:
    """file stem -> (caption, PNG bytes)."""
    plots = {}
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
            rows.append([key, *[_short(values.get(label)) for label in labels]])
        blocks.append(("Config differences between methods", rows))
    return blocks


def _int(v) -> str:
    return f"{v:,}" if isinstance(v, int) else "?"


def _short(v, limit: int = 200) -> str:
    s = json.dumps(v, default=str) if isinstance(v, (dict, list)) else str(v)
    return s if len(s) <= limit else s[: limit - 1] + "…"


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
    keys = _ordered_union(e.keys() for e in envs)
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
    best = {cls: best_label(table, cls) for cls in table["classes"]}
    for label, row in table["rows"].items():
        cells = []
        for cls in table["classes"]:
            t = cell_text(row.get(cls))
            cells.append(f"**{t}**" if markdown and best[cls] == label else t)
        rows.append([label, _seeds_text(comp["methods"][label]), *cells])
    return rows


def delta_rows(comp: dict, bench: str, metric: str) -> list[list[str]]:
    table = comp["tables"][bench][metric]
    rows = [["method", *table["classes"]]]
    for label, row in table["rows"].items():
        if label != comp["baseline"]:
            rows.append([label, *[delta_text(row.get(cls)) for cls in table["classes"]]])
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
    def tables(pairs):
        out = []
        for bench, metric in pairs:
            table = comp["tables"][bench][metric]
            note = _tokenizer_note(comp, metric)
            out += [f"### {bench} · {metric} ({_dir_note(table['direction'])})", "",
                    *([f"*{note}*", ""] if note else []),
                    *_md_table(value_rows(comp, bench, metric), numeric_from=2), ""]
            if len(table["rows"]) > 1:
                out += [f"Δ {metric} vs `{comp['baseline']}`:", "", *_md_table(delta_rows(comp, bench, metric)), ""]
        return out

    head, rest = _split_metrics(comp)
    lines += ["## Results", "", *tables(head)]
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
    def tables(pairs):
        for bench, metric in pairs:
            table = comp["tables"][bench][metric]
            parts.append(f"<h3>{e(bench)} · {e(metric)} <span class=\"note\">({_dir_note(table['direction'])})</span></h3>")
            note = _tokenizer_note(comp, metric)
            if note:
                parts.append(f'<p class="warn">{e(note)}</p>')
            rows = value_rows(comp, bench, metric, markdown=False)
            best = {c: best_label(table, c) for c in table["classes"]}
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


def default_out(comp: dict, first_run: Path) -> Path:
    slug = re.sub(r"[^A-Za-z0-9_.+=-]+", "_", "_".join(comp["methods"]))
    if len(slug) > 60:
        slug = slug[:50] + "-" + hashlib.sha1(slug.encode()).hexdigest()[:8]
    return first_run.parent / f"compare-{slug}"


def write(comp: dict, out: Path, plots: bool = True) -> Path:
    """Write report.md, report.html, comparison.json and plots/*.png (``plots=False``: no plots)."""
    out = Path(out)
    plots = make_plots(comp) if plots else {}
    (out / "plots").mkdir(parents=True, exist_ok=True)
    files = {}
    for stem, (caption, png) in plots.items():
        (out / "plots" / f"{stem}.png").write_bytes(png)
        files[stem] = (caption, f"plots/{stem}.png")
    write_json(out / "comparison.json", comp)
    write_atomic(out / "report.md", to_markdown(comp, files, out))
    write_atomic(out / "report.html", to_html(comp, plots, out))
    return out


def compare(run_paths: list[str | Path], baseline: str | Path | None = None, out: str | Path | None = None,
            stage: str | None = None, plots: bool = True) -> Path:
    """Build the comparison and write it; returns the output folder."""
    comp = build(run_paths, baseline, stage)
    return write(comp, Path(out) if out else default_out(comp, Path(run_paths[0])), plots)
