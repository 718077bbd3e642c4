"""Comparison reports: several runs against a baseline, in the shape of the papers' tables.

    adaptlang compare runs/mlm-s0 runs/mlm-s1 runs/xling+replay-s0 runs/xling+replay-s1 \
        --baseline runs/mlm-s0 [--stage instruct] [--out runs/compare-x]

Writes ``report.md``, ``report.html`` (self-contained: the plots are PNG data URIs),
``comparison.json`` (every number of the tables) and ``plots/*.png`` to the output folder
(rendering: adaptlang.compare_report; this module loads, groups and computes).

What is compared, exactly:

* **Methods.** Runs whose resolved configs (``config.yaml``) are equal except for ``seed``,
  ``name``, ``output_dir`` and ``overwrite`` (and in paths that name the seed's own run
  folder, ``.../AFA-s1/stages/instruct/model``) are seeds of one *method*; its label is the
  run name without its ``-s<seed>`` suffix (``xling+replay-s1`` -> ``xling+replay``).
  The baseline is a method too (all its seeds); by default the one whose strategies are
  exactly ``[mlm]`` (monolingual denoising, Instruct-Align section 4.4), else the first.
* **Tables** (AF paper Tables 1-3, Instruct-Align Tables 4-5): rows = methods, columns =
  the language classes of the benchmark result (``classes`` of every benchmark under
  ``stages.<stage>.eval`` of ``metrics.json``: perplexity, and any other benchmark with the
  same ``{"languages", "classes", "skipped"}`` shape), ``overall`` last; one table per
  benchmark metric. A cell is the mean over the method's seeds, ``± sample standard
  deviation`` (n-1) when there are several. The best mean of a column is bold when the
  metric's direction is known (adaptlang.forgetting.DIRECTIONS).
* **Deltas** against the baseline, signed, ``method - baseline``: when the method and the
  baseline have the same seeds the per-seed differences are paired (mean ± std of the
  paired differences), otherwise difference of the means (± the method's std).
  ``delta_rel``: the relative change of the mean, ``delta / |baseline mean|``.
* **Perplexities** (adaptlang.forgetting.log_scale: ppl_token, ppl_char): differences of
  exponentials are unreadable once the values are large, so their cells also get the
  mean ± std of the natural logs of the values (``log_mean``, ``log_std``: log-ppl) and
  the delta of those (``delta_log``, ``delta_log_std``, paired like ``delta``); the report
  shows relative changes in percent, and log-ppl instead of perplexities too large to read.
* **Plots**: per-class delta bars (Instruct-Align Figure 2: delta of each method against
  the baseline per language group) and metric-by-stage lines per class (forgetting: AF
  paper section 5 and Instruct-Align section 5 discuss the drop on the languages known
  before adaptation), for the headline metrics (adaptlang.compare_common.HEADLINE) of
  every benchmark.
* **Stage**: by default each run's last evaluated stage (named per method in the report);
  ``stage=`` compares one named stage in every run.

Deviations: the papers report one run per configuration (Instruct-Align) or do not state
seeds (AF paper); means and standard deviations over seeds are our addition.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .compare_common import ordered_union, short
from .compare_report import write
from .errors import UserError, listing, suggest
from .forgetting import direction, log_scale

IGNORED_CONFIG_KEYS = ("seed", "name", "output_dir", "overwrite")


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
        """Equal for runs that differ only in seed (and name/output folder), also where a path
        names the seed's own earlier run (``model.name_or_path=.../zero-shot-s1/stages/tune/model``,
        an ``adaptlang eval --run`` of ``.../AFA-s1/...``): ``-s<seed>`` before a ``/`` or at a
        value's end counts as the seed."""
        if self.config is None:
            return json.dumps([self.stem, self.metrics.get("strategies")])
        cfg = {k: v for k, v in self.config.items() if k not in IGNORED_CONFIG_KEYS}
        key = json.dumps(cfg, sort_keys=True, default=str)
        if self.seed is None:
            return key
        return re.sub(rf'-s{self.seed}(?=[/\\\\"])', "-s<seed>", key)   # before /, \\ (JSON-escaped) or "


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
    check_metrics_shape(metrics, file)
    config = None
    if (path / "config.yaml").is_file():
        try:
            config = yaml.safe_load((path / "config.yaml").read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise UserError(f"{path / 'config.yaml'}: not a valid config ({first})") from None
        if not isinstance(config, dict):
            raise UserError(f"{path / 'config.yaml'}: not a valid config (a mapping of keys expected, got "
                            f"{type(config).__name__})")
    run = Run(path, metrics, config)
    if not run.evaluated_stages():
        raise UserError(f"{path}: no evaluated stage in metrics.json (status: {metrics.get('status', '?')})")
    return run


def check_metrics_shape(metrics: dict, file: Path) -> None:
    """The parts of metrics.json that compare reads, in the schema's shape (one line naming the
    first that is not): stages of mappings, ``eval`` of benchmark mappings, ``classes`` of
    class -> figures mappings, ``seed`` an integer."""
    def refuse(where: str, wanted: str, value) -> UserError:
        return UserError(f"{file}: {where} is {type(value).__name__} {str(value)[:60]!r}, expected {wanted} "
                         "(schema adaptlang.metrics/1)")

    seed = metrics.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise refuse("seed", "an integer", seed)
    if not isinstance(metrics.get("strategies", []), list):
        raise refuse("strategies", "a list", metrics["strategies"])
    for stage, entry in metrics["stages"].items():
        if not isinstance(entry, dict):
            raise refuse(f"stages.{stage}", "a mapping", entry)
        evaluated = entry.get("eval", {})
        if not isinstance(evaluated, dict):
            raise refuse(f"stages.{stage}.eval", "a mapping of benchmarks", evaluated)
        for bench, result in evaluated.items():
            classes = result.get("classes", {}) if isinstance(result, dict) else result
            if not isinstance(classes, dict):
                raise refuse(f"stages.{stage}.eval.{bench}" + (".classes" if isinstance(result, dict) else ""),
                             "a mapping", classes)
            for cls, figures in classes.items():
                if not isinstance(figures, dict):
                    raise refuse(f"stages.{stage}.eval.{bench}.classes.{cls}", "a mapping of figures", figures)


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
    benchmarks = ordered_union(f.keys() for fs in figures.values() for f in fs)
    tables: dict = {}
    for bench in benchmarks:
        classes = ordered_union(f.get(bench, {}).keys() for fs in figures.values() for f in fs)
        if "overall" in classes:
            classes.remove("overall")
            classes.append("overall")
        metrics = ordered_union(c.keys() for fs in figures.values() for f in fs for c in f.get(bench, {}).values())
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
                        if log_scale(metric) and all(v > 0 for v in values):
                            s = summarize([math.log(v) for v in values])
                            row[cls].update(log_mean=s["mean"], log_std=s["std"])
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
        "from_base": _from_base(methods, tables),
        "frontier": frontier(methods),
        "environment": {r.name: r.metrics.get("environment", {}) for m in methods for r in m.runs},
        "config_differences": _config_differences(methods),
        "common": _common_setup(methods),
        "warnings": _warnings(methods, stage),
    }


def _warnings(methods: list[Method], stage: str | None) -> list[str]:
    """What a reader must know before trusting the tables: runs that did not complete, and
    methods compared at different stages (each run's last evaluated one, when --stage is not
    given). ``methods[0]`` is the baseline, which may end elsewhere by design (the IA grid's
    zero-shot baseline ends at ``tune``), so only the other methods' stages are compared."""
    notes = [f"run {r.name} is not complete (status: {r.metrics.get('status', '?')}); its figures are those of "
             f"stage '{m.stages[r.name]}'" for m in methods for r in m.runs if r.metrics.get("status") != "complete"]
    compared = sorted({m.stages[r.name] for m in methods[1:] or methods for r in m.runs})
    if stage is None and len(compared) > 1:
        notes.append(f"the runs are compared at different stages ({', '.join(compared)}): pass --stage to compare "
                     "one stage in every run")
    for m in methods:
        seeds = [str(s) for s in m.seeds]
        if len(set(seeds)) < len(seeds):
            notes.append(f"method {m.label}: its runs {', '.join(r.name for r in m.runs)} share seeds (seeds "
                         f"{', '.join(seeds)}): repeats of one seed, so its ± is not a spread over seeds")
    dropped = sorted({f"{bench} {key} ({r.name}: {value!r})"[:120] for m in methods for r in m.runs
                      for bench, result in r.metrics["stages"][m.stages[r.name]].get("eval", {}).items()
                      if isinstance(result, dict)
                      for figures in (result.get("classes") or {}).values()
                      for key, value in figures.items() if value is not None and key not in _numeric(figures)
                      and not key.startswith("n_")})
    if dropped:
        notes.append(f"non-numeric figures left out of the tables: {'; '.join(dropped[:5])}"
                     + (f" and {len(dropped) - 5} more" if len(dropped) > 5 else ""))
    return notes


def _add_deltas(rows: dict, base_label: str) -> None:
    """``delta`` (± ``delta_std``, ``delta_paired``) and ``delta_rel`` of every cell against
    the baseline's; ``delta_log`` (± ``delta_log_std``) where both cells have ``log_mean``."""
    base = rows.get(base_label, {})
    for label, row in rows.items():
        for cls, cell in row.items():
            if label == base_label or cls not in base:
                continue
            b = base[cls]
            paired = (sorted(map(str, cell["seeds"])) == sorted(map(str, b["seeds"]))
                      and len(set(map(str, b["seeds"]))) == len(b["seeds"]))
            for key, get in (("delta", lambda c: c["values"]), ("delta_log", _logs)):
                mine, theirs = get(cell), get(b)
                if mine is None or theirs is None:
                    continue
                if paired:
                    by_seed = dict(zip(map(str, b["seeds"]), theirs))
                    s = summarize([v - by_seed[str(seed)] for seed, v in zip(cell["seeds"], mine)])
                    cell[key], cell[f"{key}_std"] = s["mean"], s["std"]
                else:
                    cell[key] = summarize(mine)["mean"] - summarize(theirs)["mean"]
                    cell[f"{key}_std"] = summarize(mine)["std"]
            cell["delta_paired"] = paired
            cell["delta_rel"] = cell["delta"] / abs(b["mean"]) if b["mean"] else None


def _logs(cell: dict) -> list[float] | None:
    return [math.log(v) for v in cell["values"]] if "log_mean" in cell else None


def _per_method(methods: list[Method], tables: dict, cells, keep_empty: bool = False) -> dict:
    """benchmark -> metric -> method -> ``cells(method, benchmark, metric, classes)`` (where
    that is not empty, unless ``keep_empty``)."""
    out: dict = {}
    for bench, metrics in tables.items():
        for metric, table in metrics.items():
            for m in methods:
                per = cells(m, bench, metric, table["classes"])
                if per or keep_empty:
                    out.setdefault(bench, {}).setdefault(metric, {})[m.label] = per
    return out


def _from_base(methods: list[Method], tables: dict) -> dict:
    """benchmark -> metric -> method -> class -> summary of (compared stage - ``base``), over
    the method's runs that evaluated their starting model (stage ``base``, adaptlang.pipeline):
    what each method learned and forgot against the model it started from."""
    def cells(m: Method, bench: str, metric: str, classes: list) -> dict:
        per: dict = {}
        for r in m.runs:
            if "base" not in r.evaluated_stages() or m.stages[r.name] == "base":
                continue
            before = _class_figures(r, "base").get(bench, {})
            after = _class_figures(r, m.stages[r.name]).get(bench, {})
            for cls in classes:
                b, a = before.get(cls, {}).get(metric), after.get(cls, {}).get(metric)
                if b is not None and a is not None and math.isfinite(a - b):
                    per.setdefault(cls, []).append(a - b)
        return {cls: summarize(v) for cls, v in per.items()}

    return _per_method(methods, tables, cells)


FRONTIER = {"benchmark": "perplexity", "metric": "bits_per_char", "learned": "adapting", "kept": "pretraining"}
MERGE_WEIGHT = "strategy.merge.weight"


def _merge_weight(run: Run):
    if "merge" not in (run.metrics.get("strategies") or []) or not isinstance(run.config, dict):
        return None
    value = (run.config.get("strategy") or {}).get("merge", {}).get("weight") \
        if isinstance(run.config.get("strategy"), dict) else None
    return float(value) if isinstance(value, (int, float)) else None


def _series_key(run: Run) -> str:
    """Runs of one line: equal configs except the merge weight (and name/output folder), one seed."""
    if run.config is None:
        return json.dumps([run.stem, run.seed])
    flat = {k: v for k, v in _flatten(run.config).items()
            if k != MERGE_WEIGHT and k.split(".")[0] not in IGNORED_CONFIG_KEYS[1:]}
    return json.dumps(flat, sort_keys=True, default=str)


def frontier(methods: list[Method]) -> dict:
    """The learning-forgetting frontier: one point per run, x = change in bits/char on the
    learned classes (``adapting``), y = the change on the kept ones (``pretraining``), from the
    run's stage ``base`` (its starting model, eval.base=true) if it has one, else its first
    evaluated stage, to the compared stage; negative x is learning, positive y is forgetting.
    Runs that differ only in ``strategy.merge.weight`` (a grid over it, same seed) are one
    line, ordered by weight."""
    bench, metric = FRONTIER["benchmark"], FRONTIER["metric"]
    points, lines = [], {}
    for m in methods:
        for r in m.runs:
            stages, to = r.evaluated_stages(), m.stages[r.name]
            start = "base" if "base" in stages else stages[0]
            if start == to:
                continue
            before = _class_figures(r, start).get(bench, {})
            after = _class_figures(r, to).get(bench, {})
            change = {}
            for axis in ("learned", "kept"):
                b = before.get(FRONTIER[axis], {}).get(metric)
                a = after.get(FRONTIER[axis], {}).get(metric)
                change[axis] = a - b if a is not None and b is not None and math.isfinite(a - b) else None
            if change["learned"] is None or change["kept"] is None:
                continue
            points.append({"run": r.name, "method": m.label, "seed": r.seed, "from": start, "to": to,
                           "merge_weight": _merge_weight(r), **change})
            lines.setdefault(_series_key(r), []).append(len(points) - 1)
    joined = []
    for members in lines.values():
        weighted = [i for i in members if points[i]["merge_weight"] is not None]
        if len(weighted) < 2:
            continue
        weighted.sort(key=lambda i: points[i]["merge_weight"])
        first = next(r for m in methods for r in m.runs if r.name == points[weighted[0]]["run"])
        label = f"{'+'.join(first.metrics.get('strategies') or [])} (seed {first.seed}) over merge weight"
        joined.append({"label": label, "points": [points[i]["run"] for i in weighted]})
    return {**FRONTIER, "points": points, "lines": joined}


def _by_stage(methods: list[Method], tables: dict) -> dict:
    """benchmark -> metric -> method -> class -> stage -> summary (every evaluated stage)."""
    def cells(m: Method, bench: str, metric: str, classes: list) -> dict:
        per: dict = {}
        for r in m.runs:
            for stage in r.evaluated_stages():
                figs = _class_figures(r, stage).get(bench, {})
                for cls in classes:
                    v = figs.get(cls, {}).get(metric)
                    if v is not None and math.isfinite(v):
                        per.setdefault(cls, {}).setdefault(stage, []).append(v)
        return {cls: {st: summarize(vals) for st, vals in stages.items()} for cls, stages in per.items()}

    return _per_method(methods, tables, cells, keep_empty=True)


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
    """The vocabulary size of the model evaluated at ``stage``: the stage's ``vocab_size``
    (len(tokenizer) after it); for run folders written before stages carried it, the last
    size a stage's ``strategy_notes.vocab.vocab_size_after`` reported, else the model's."""
    size = run.metrics.get("model", {}).get("vocab_size")
    for name, st in run.metrics["stages"].items():
        if st.get("vocab_size") is not None:
            size = st["vocab_size"]
        else:
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
    for name in ordered_union(names.values()):  # a strategy not every method has: its options in one row
        if name not in shared:
            out[f"strategy.{name}"] = {
                label: " ".join(f"{k}={short(v, 30)}" for k, v in c["strategy"][name].items())
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
    for key in ordered_union(f.keys() for f in flat.values()):
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


def default_out(comp: dict, first_run: Path) -> Path:
    slug = re.sub(r"[^A-Za-z0-9_.+=-]+", "_", "_".join(comp["methods"]))
    if len(slug) > 60:
        slug = slug[:50] + "-" + hashlib.sha1(slug.encode()).hexdigest()[:8]
    return first_run.parent / f"compare-{slug}"


def compare(run_paths: list[str | Path], baseline: str | Path | None = None, out: str | Path | None = None,
            stage: str | None = None, plots: bool = True) -> Path:
    """Build the comparison and write it; returns the output folder."""
    return comparison(run_paths, baseline, out, stage, plots)[0]


def comparison(run_paths: list[str | Path], baseline: str | Path | None = None, out: str | Path | None = None,
               stage: str | None = None, plots: bool = True) -> tuple[Path, dict]:
    """``compare``, returning the comparison (its ``warnings`` too) beside the output folder."""
    if out is not None and Path(out).exists() and not Path(out).is_dir():
        raise UserError(f"--out {out}: a file is in the way; the comparison is a folder (report.md, report.html, ...)")
    comp = build(run_paths, baseline, stage)
    return write(comp, Path(out) if out else default_out(comp, Path(run_paths[0])), plots), comp
