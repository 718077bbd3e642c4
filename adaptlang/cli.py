"""Command line: ``adaptlang run|compare|resume|eval|export|config|strategies|instructions``.

User mistakes print one line (``adaptlang: error: ...``) and exit 2, without a traceback.
"""
from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from .errors import UserError  # noqa: E402

USAGE = """adaptlang run [key=value ...]         run the experiment (default: strategy=af+replay)
adaptlang run --config runs/X/config.yaml [key=value ...]   rerun a resolved config
adaptlang run strategy=a,b seed=1,2,3 | grid=NAME [key=value ...]
                                       a grid of runs, then a comparison report (configs/grid/)
adaptlang compare RUN... [--baseline RUN] [--stage S] [--out DIR]
                                       report (Markdown + HTML) comparing runs with a baseline
adaptlang resume runs/X                continue an interrupted run (same result as uninterrupted)
adaptlang eval MODEL_PATH [key=value ...]  benchmarks on a saved model -> MODEL_PATH-eval.json or --out
adaptlang export RUN|ADAPTER --out DIR [--stage S] [--merge-adapters] [--base PATH]
                                       a plain transformers checkpoint of a run's stage, or of a
                                       peft adapter merged into its (vocabulary-grown) base
adaptlang config [key=value ...] [--resolved]
                                       print the checked plan (--resolved: the resolved config YAML)
adaptlang strategies                   list the registered strategies
adaptlang instructions [key=value ...] [--source xling|mlm|...] [--out FILE] [--limit N]
                                       preview/export a stage's generated instructions as JSONL"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="adaptlang", usage=USAGE)
    parser.add_argument("command", choices=["run", "compare", "resume", "eval", "export", "config", "strategies",
                                                    "instructions"])
    parser.add_argument("args", nargs="*", help="key=value overrides (eval: the model path first)")
    parser.add_argument("--config", help="a resolved config.yaml to start from")
    parser.add_argument("--out", help="eval: where to write the metrics JSON; instructions: the JSONL file; "
                                      "export: the new checkpoint folder")
    parser.add_argument("--limit", type=int, help="instructions: at most N examples (a seeded sample)")
    parser.add_argument("--baseline", help="compare: the baseline run (default: the mlm run, else the first)")
    parser.add_argument("--stage", help="compare: the stage compared in every run (default: each run's last); "
                                        "export: the run's stage (default: its last)")
    parser.add_argument("--merge-adapters", action="store_true",
                        help="export: merge a peft adapter folder into its base model")
    parser.add_argument("--base", help="export: the adapter's base model folder (default: its base_model_name_or_path)")
    parser.add_argument("--source", help="instructions: the instruction source (default: xling, or mlm when active)")
    parser.add_argument("--resolved", action="store_true", help="config: print the resolved config instead of the plan")
    ns = parser.parse_intermixed_args(argv)  # options may come anywhere among the key=value overrides
    try:
        return _dispatch(ns)
    except UserError as exc:
        print(f"adaptlang: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("adaptlang: interrupted", file=sys.stderr)
        return 130


# the options each command takes; any other given to it is refused (never silently ignored)
OPTIONS = {"run": ("config",), "compare": ("baseline", "stage", "out"), "resume": (), "eval": ("config", "out"),
           "export": ("out", "stage", "merge_adapters", "base"), "config": ("config", "resolved"), "strategies": (),
           "instructions": ("config", "source", "out", "limit")}


def _check_options(ns) -> None:
    for option in sorted(set().union(*OPTIONS.values()) - set(OPTIONS[ns.command])):
        if getattr(ns, option) is not None and getattr(ns, option) is not False:
            takes = ", ".join(f"--{o.replace('_', '-')}" for o in OPTIONS[ns.command]) or "no options"
            raise UserError(f"--{option.replace('_', '-')} is not an option of `adaptlang {ns.command}` "
                            f"(it takes {takes})")


def _dispatch(ns) -> int:
    from .config import load_config, to_yaml

    _check_options(ns)

    if ns.command == "strategies":
        if ns.args:
            raise UserError(f"`adaptlang strategies` takes no arguments (got {' '.join(ns.args)})")
        from .composition import strategy_defaults
        from .strategy import STRATEGIES, load_plugins

        load_plugins()
        for name in STRATEGIES:
            cls = STRATEGIES.get(name)
            doc = (cls.__doc__ or "").strip().splitlines()[0]
            stages = ",".join(strategy_defaults(name)["stages"]) or "-"
            print(f"{name:10s} stages={stages:24s} owns={','.join(sorted(cls.owns)) or '-':28s} {doc}")
        return 0
    if ns.command == "config":
        cfg = load_config(ns.args, base=ns.config)
        if ns.resolved:
            print(to_yaml(cfg), end="")
        else:
            from .plan import make_plan

            print(make_plan(cfg).describe(), end="")
        return 0
    if ns.command == "run":
        from .grid import is_grid, run_grid

        if is_grid(ns.args):
            out = run_grid(ns.args, base=ns.config)
            print(f"grid complete; comparison: {out / 'report.html'} ({out / 'report.md'})")
            return 0
        from .pipeline import run

        path = run(load_config(ns.args, base=ns.config))
        print(f"run complete: {path} (report: {path / 'report.md'})")
        return 0
    if ns.command == "compare":
        from .compare import comparison

        out, comp = comparison(ns.args, ns.baseline, ns.out, ns.stage)
        for warning in comp["warnings"]:
            print(f"adaptlang: warning: {warning}", file=sys.stderr)
        print(f"comparison written: {out / 'report.html'} ({out / 'report.md'})")
        return 0
    if ns.command == "resume":
        from pathlib import Path

        from .pipeline import run

        if len(ns.args) != 1:
            raise UserError("resume needs exactly one run directory: adaptlang resume runs/NAME")
        folder = Path(ns.args[0])
        if not (folder / "config.yaml").is_file():
            raise UserError(f"cannot resume: {folder} is not a run directory (no config.yaml)")
        cfg = load_config([f"output_dir={folder.parent}", f"name={folder.name}"], base=folder / "config.yaml")
        path = run(cfg, resume=True)
        print(f"run complete: {path} (report: {path / 'report.md'})")
        return 0
    if ns.command == "eval":
        if not ns.args or "=" in ns.args[0]:
            raise UserError("eval needs a model path first: adaptlang eval PATH [key=value ...]")
        from .evaluate import evaluate_path

        out = evaluate_path(ns.args[0], load_config(ns.args[1:], base=ns.config), ns.out)
        print(f"metrics written to {out}")
        return 0
    if ns.command == "export":
        from .export import export

        if len(ns.args) != 1:
            raise UserError("export needs exactly one source: adaptlang export RUN|ADAPTER --out DIR")
        record = export(ns.args[0], ns.out, ns.stage, ns.merge_adapters, ns.base)
        if ns.merge_adapters and record["kind"] == "run":
            print("adaptlang: note: a run's stage models are merged at the stage end already; "
                  "--merge-adapters had nothing to do", file=sys.stderr)
        what = f"stage '{record['stage']}' of {record['source']}" if record["kind"] == "run" else record["source"]
        print(f"exported {what} to {ns.out} (max |logit difference| {record['max_abs_logit_diff']:.2g}, "
              f"vocabulary {record['vocab_size']['exported_rows']} rows)")
        return 0
    if ns.command == "instructions":
        from .instructions.export import export

        count, where = export(load_config(ns.args, base=ns.config), ns.source, ns.out, ns.limit)
        print(f"{count} instructions written to {where}", file=sys.stderr)
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
