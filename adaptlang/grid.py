"""Experiment grids: several strategies and seeds in one command, then a comparison report.

    adaptlang run strategy=xling+replay,mlm seed=1,2,3          # 2 x 3 runs, then compare
    adaptlang run grid=ia_paper train.max_steps=20               # configs/grid/ia_paper.yaml

**Sweeps on the command line.** A comma in the value of ``strategy``, ``seed`` or a config
group (``model``, ``languages``, ``experiment``) lists alternatives; the runs are the
cartesian product, in the order the keys are given. A numeric strategy option is swept too
(``strategy.merge.weight=0,0.25,0.5,0.75,1``), in the runs where its strategy is active only
(the others run once), and names them ``...-<option><value>-s<seed>`` (``merge-weight0.25-s0``).
Any other key is never swept (its value may legitimately contain commas), and a list value
(``[a,b]``) or a quoted value is never split. Each run is a normal run directory named
``<strategies>[-<other swept values>]-s<seed>`` (with ``name=X``: ``X[-<swept values>]-s<seed>``).

**Grid files** (``grid=NAME`` from ``configs/grid/`` or ``grid=path.yaml``)::

    name: ia               # the comparison goes to <output_dir>/compare-<name>
    baseline: zero-shot    # the method the others are compared with (default: mlm, else the first)
    seeds: [0]
    common: [experiment=ia]                    # overrides for every run
    runs:                                      # label -> overrides; folder <label>-s<seed>
      zero-shot: [strategy=none, experiment=ia_zeroshot]
      mlm: [strategy=mlm]
    sweep:                                     # numeric strategy options, in the runs where active
      strategy.merge.weight: [0, 0.5, 1]

Overrides on the command line are applied after the grid's own (``train.max_steps=5``
caps every run); ``seed=1,2`` replaces the grid's seeds; ``strategy.<name>.<option>=``
applies to the runs in which that strategy is active (an error if it is active in none).

Everything is resolved and checked before the first run starts. A run directory that
already exists with the same resolved config is reused when complete and resumed when
interrupted (``adaptlang resume``); with a different config it is an error (or replaced
with ``overwrite=true``). The comparison report (adaptlang.compare) follows the last run.
"""
from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path


from .composition import order_strategies
from .config import GROUPS, load_config, parse_override, to_yaml
from .rundir import confined, plain_name, run_name
from .yamlfiles import CONFIG_ROOT, read_yaml
from .errors import UserError, listing, suggest
from .rundir import read_status

SWEEP_KEYS = ("strategy", "seed", *GROUPS)
GRID_KEYS = ("name", "baseline", "seeds", "common", "runs", "sweep")
OPTION_SWEEP = re.compile(r"strategy\.[A-Za-z_]\w*\.[A-Za-z_]\w*")
NUMBER = re.compile(r"[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?")


@dataclass
class GridRun:
    name: str
    label: str       # the method (comparison row): the name without the seed suffix
    overrides: list[str]
    grid_label: str = ""  # the grid file's run label (grid= only)


def split_sweep(arg: str) -> tuple[str, list[str]] | None:
    """``seed=1,2,3`` -> ("seed", ["1", "2", "3"]); None when ``arg`` is not a sweep."""
    if "=" not in arg:
        return None
    key, raw = arg.split("=", 1)
    key, raw = key.strip(), raw.strip()
    if "," not in raw or raw[:1] in "[{\"'":
        return None
    items = [x.strip() for x in raw.split(",")]
    if key not in SWEEP_KEYS and not (OPTION_SWEEP.fullmatch(key) and all(NUMBER.fullmatch(x) for x in items)):
        return None
    if any(not x for x in items):
        raise UserError(f"{arg}: empty item in the list of alternatives (use {key}=a,b,c)")
    if len(set(items)) != len(items):
        raise UserError(f"{arg}: an alternative appears twice")
    return key, items


def is_grid(args: list[str]) -> bool:
    return any(a.startswith("grid=") or split_sweep(a) for a in args)


def _grid_file(choice: str) -> Path:
    if choice.endswith((".yaml", ".yml")):
        path = Path(choice)
        if not path.is_file():
            raise UserError(f"grid={choice}: file not found")
        return path
    path = CONFIG_ROOT / "grid" / f"{choice}.yaml"
    if not path.is_file():
        options = sorted(p.stem for p in (CONFIG_ROOT / "grid").glob("*.yaml"))
        raise UserError(f"unknown grid '{choice}'.{suggest(choice, options)} Valid: {listing(options)} "
                        "(or a path to a .yaml file)")
    return path


def _string_list(value, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, (str, int, float)) for v in value):
        raise UserError(f"{where}: expected a list of key=value strings, got {value!r}")
    for v in value:
        parse_override(str(v))
    return [str(v) for v in value]


def load_grid(choice: str) -> dict:
    path = _grid_file(choice)
    raw = read_yaml(path)
    for key in raw:
        if key not in GRID_KEYS:
            raise UserError(f"{path}: unknown key '{key}'.{suggest(key, GRID_KEYS)} Valid: {listing(GRID_KEYS)}")
    runs = raw.get("runs")
    if not isinstance(runs, dict) or not runs:
        raise UserError(f"{path}: 'runs' must map labels to lists of overrides, e.g. runs: {{mlm: [strategy=mlm]}}")
    for label in runs:
        if not isinstance(label, str):
            raise UserError(f"{path}: run label {label!r} must be a plain folder name")
        plain_name(label, f"{path}: run label")
    if raw.get("name") is not None:
        plain_name(raw["name"], f"{path}: name")  # the comparison goes to <output_dir>/compare-<name>
    seeds = raw.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise UserError(f"{path}: 'seeds' must be a list of integers, got {seeds!r}")
    baseline = raw.get("baseline")
    if baseline is not None and baseline not in runs:
        raise UserError(f"{path}: baseline '{baseline}' is not a run label.{suggest(str(baseline), runs)} "
                        f"Labels: {listing(runs)}")
    sweep = raw.get("sweep") or {}
    if not isinstance(sweep, dict):
        raise UserError(f"{path}: 'sweep' must map strategy options to lists of numbers, e.g. "
                        "sweep: {strategy.merge.weight: [0, 0.5, 1]}")
    for key, values in sweep.items():
        numbers = isinstance(values, list) and values and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        if not OPTION_SWEEP.fullmatch(str(key)) or not numbers or len(set(values)) != len(values):
            raise UserError(f"{path}: sweep.{key}: expected a strategy option (strategy.NAME.OPTION) and a list "
                            f"of distinct numbers, got {values!r}")
    return {"name": str(raw.get("name") or path.stem), "baseline": baseline, "seeds": seeds,
            "sweep": [(str(k), [str(v) for v in values]) for k, values in sweep.items()],
            "common": _string_list(raw.get("common"), f"{path}: common"),
            "runs": {label: _string_list(ov, f"{path}: runs.{label}") for label, ov in runs.items()}}


def _value_name(key: str, value: str) -> str:
    return Path(value).stem if key in GROUPS and value.endswith((".yaml", ".yml")) else value


def expand(args: list[str], base: str | Path | None = None) -> tuple[list[GridRun], dict]:
    """The runs of a grid (each with its full override list) and the grid's settings
    (name, baseline label). Configs are resolved here, so every mistake shows up before
    anything runs."""
    grid_choice = None
    sweeps: list[tuple[str, list[str]]] = []
    fixed: list[str] = []
    for a in args:
        if a.startswith("grid="):
            if grid_choice is not None:
                raise UserError("grid= given twice")
            grid_choice = a.split("=", 1)[1]
            continue
        sweep = split_sweep(a)
        if sweep:
            if sweep[0] in [k for k, _ in sweeps]:
                raise UserError(f"{sweep[0]}= swept twice")
            sweeps.append(sweep)
        else:
            fixed.append(a)
    option_sweeps = [(k, v) for k, v in sweeps if k not in SWEEP_KEYS]
    sweeps = [(k, v) for k, v in sweeps if k in SWEEP_KEYS]
    user_name = next((parse_override(a)[1] for a in fixed if a.split("=", 1)[0].strip() == "name"), None)
    fixed = [a for a in fixed if a.split("=", 1)[0].strip() != "name"]
    # strategy.<name>.<option>=... from the command line: only for the runs where <name> is active
    strategy_options = [a for a in fixed if a.split("=", 1)[0].strip().startswith("strategy.")]
    fixed = [a for a in fixed if a not in strategy_options]

    runs: list[GridRun] = []
    if grid_choice is not None:
        grid = load_grid(grid_choice)
        given = [k for k, _ in option_sweeps]
        option_sweeps = [(k, v) for k, v in grid["sweep"] if k not in given] + option_sweeps  # the CLI's win
        if user_name:
            raise UserError("name= cannot be combined with grid= (the grid's run labels name the runs)")
        seeds = dict(sweeps).get("seed") or [str(s) for s in grid["seeds"]]
        fixed_seeds = [a for a in fixed if a.split("=", 1)[0].strip() == "seed"]
        if fixed_seeds:  # seed=N replaces the grid's seeds too
            seeds = [str(parse_override(fixed_seeds[-1])[1])]
            fixed = [a for a in fixed if a not in fixed_seeds]
        other = [(k, v) for k, v in sweeps if k != "seed"]
        for label, overrides in grid["runs"].items():
            for combo in itertools.product(*[v for _, v in other]):
                tag = "-".join([label, *[_value_name(k, v) for (k, _), v in zip(other, combo)]])
                for seed in seeds:
                    ov = [*grid["common"], *overrides, *fixed, *[f"{k}={v}" for (k, _), v in zip(other, combo)],
                          f"seed={seed}"]
                    name = run_name(tag, int(seed))
                    runs.append(GridRun(name, tag, ov + [f"name={name}"], label))
        settings = {"name": grid["name"], "baseline": grid["baseline"]}
    else:
        keys = [k for k, _ in sweeps]
        for combo in itertools.product(*[v for _, v in sweeps]):
            ov = [*fixed, *[f"{k}={v}" for k, v in zip(keys, combo)]]
            cfg = load_config(ov, base=base)
            # in set-up order, so that two spellings of one composition (a+b, b+a) name one run
            lead = str(user_name) if user_name else ("+".join(order_strategies(list(cfg.strategy))) or "none")
            parts = [lead] + [_value_name(k, v) for k, v in zip(keys, combo)
                              if k != "seed" and (k != "strategy" or user_name)]
            tag = "-".join(parts)
            name = run_name(tag, int(cfg.seed))
            runs.append(GridRun(name, tag, ov + [f"name={name}"]))
        settings = {"name": None, "baseline": None}
    runs = _strategy_options(runs, strategy_options, base)
    runs = _option_sweeps(runs, option_sweeps, base)
    names = [r.name for r in runs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise UserError(f"the grid names two runs alike: {listing(dupes)} (give the alternatives distinct values)")
    return runs, settings


def _strategy_options(runs: list[GridRun], options: list[str], base) -> list[GridRun]:
    """Add each command-line ``strategy.<name>.*`` override to the runs in which strategy
    <name> is active (after the run's own overrides, before its ``name=``)."""
    if not options:
        return runs
    used = set()
    for r in runs:
        active = set(load_config(r.overrides, base=base).strategy.keys())
        mine = [o for o in options if o.split("=", 1)[0].strip().split(".")[1] in active]
        used.update(mine)
        r.overrides = r.overrides[:-1] + mine + r.overrides[-1:]  # the last one is name=
    unused = [o for o in options if o not in used]
    if unused:
        name = unused[0].split("=", 1)[0].strip().split(".")[1]
        raise UserError(f"{unused[0]}: strategy '{name}' is active in no run of the grid")
    return runs


def _option_sweeps(runs: list[GridRun], sweeps: list[tuple[str, list[str]]], base) -> list[GridRun]:
    """Each run in which the strategy of a swept ``strategy.<name>.<option>`` is active becomes
    one run per value (``<label>-<option><value>-s<seed>``); the other runs stay as they are."""
    if not sweeps:
        return runs
    out, used = [], set()
    for r in runs:
        cfg = load_config(r.overrides, base=base)
        mine = [(k, v) for k, v in sweeps if k.split(".")[1] in cfg.strategy]
        used.update(k for k, _ in mine)
        for combo in itertools.product(*[v for _, v in mine]):
            tag = "-".join([r.label, *[f"{k.rsplit('.', 1)[1]}{v}" for (k, _), v in zip(mine, combo)]])
            name = run_name(tag, int(cfg.seed))
            ov = r.overrides[:-1] + [f"{k}={v}" for (k, _), v in zip(mine, combo)] + [f"name={name}"]
            out.append(GridRun(name, tag, ov, r.grid_label))
    unused = [k for k, _ in sweeps if k not in used]
    if unused:
        raise UserError(f"{unused[0]}: strategy '{unused[0].split('.')[1]}' is active in no run of the grid")
    return out


def run_grid(args: list[str], base: str | Path | None = None) -> Path:
    """Expand, check, run every run (or reuse/resume it), then write the comparison."""
    from .compare import build, default_out
    from .compare_report import write
    from .pipeline import run

    runs, settings = expand(args, base)
    plans = []
    for r in runs:
        cfg = load_config(r.overrides, base=base)
        folder = Path(str(cfg.output_dir)) / r.name
        action = "run"
        if folder.exists() and not cfg.overwrite:
            saved = (folder / "config.yaml").read_text(encoding="utf-8") if (folder / "config.yaml").is_file() else None
            if saved != to_yaml(cfg):
                raise UserError(f"run directory {folder} already exists with a different config (status: "
                                f"{read_status(folder)}); pass overwrite=true to replace it, or remove it")
            action = "reuse" if read_status(folder) == "complete" else "resume"
        plans.append((r, cfg, folder, action))
    print(f"grid: {len(plans)} runs: " + ", ".join(p[0].name for p in plans))
    for i, (r, cfg, folder, action) in enumerate(plans, 1):
        print(f"grid: [{i}/{len(plans)}] {r.name}: {action}")
        if action != "reuse":
            run(cfg, resume=action == "resume")
    paths = [p[2] for p in plans]
    baseline = None
    if settings["baseline"]:
        baseline = next(p[2] for p in plans if p[0].grid_label == settings["baseline"])
    comp = build(paths, baseline)
    out = paths[0].parent / f"compare-{settings['name']}" if settings["name"] else default_out(comp, paths[0])
    confined(paths[0].parent, out, "the grid's comparison")
    return write(comp, out)
