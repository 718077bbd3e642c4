"""Command line: ``adaptlang run|resume|eval|compare|export|config|strategies|instructions``.

One argparse subcommand each (``adaptlang COMMAND --help``); key=value overrides and options
may come in any order. User mistakes -- a bad value, an unknown option, an option of another
command -- print one line (``adaptlang: error: ...``) and exit 2, without a traceback.
"""
from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from .errors import UserError  # noqa: E402

EXAMPLES = """examples:
  adaptlang run                                  the experiment (default: strategy=af+replay)
  adaptlang run strategy=vocab+lora train.lr=1e-4
  adaptlang run --config runs/X/config.yaml      rerun a resolved config
  adaptlang run strategy=af,replay seed=1,2,3    a grid of runs, then a comparison (also grid=NAME)
  adaptlang resume runs/X                        continue an interrupted run
  adaptlang eval runs/X/stages/instruct/model    benchmarks on a saved model
  adaptlang compare runs/A runs/B --baseline runs/A
  adaptlang export runs/X --out exported/        a plain transformers checkpoint

`adaptlang COMMAND --help` describes each command."""


class Parser(argparse.ArgumentParser):
    """argparse whose errors are user mistakes: one line, exit 2 (see ``main``)."""

    def error(self, message):
        raise UserError(f"{message} (see `{self.prog} --help`)")


def command(sub, name: str, summary: str, handler, *, overrides: str | None = "key=value overrides",
            metavar: str = "key=value", config: bool = False) -> argparse.ArgumentParser:
    """A subcommand: ``args`` takes its positional words (``overrides`` says what they are;
    None: it takes none), ``--config`` where a config can be started from."""
    parser = sub.add_parser(name, help=summary, description=summary)
    parser.add_argument("args", nargs="*", metavar=metavar, help=overrides or argparse.SUPPRESS)
    if config:
        parser.add_argument("--config", metavar="FILE", help="a resolved config.yaml to start from "
                            "(a run's config.yaml reruns it)")
    parser.set_defaults(handler=handler, takes_args=overrides is not None)
    return parser


def build_parser() -> Parser:
    parser = Parser(prog="adaptlang", description="Continual language adaptation of decoder LLMs with composable "
                    "strategies.", epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    from ._version import __version__

    parser.add_argument("--version", action="version", version=f"adaptlang {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser, required=True)
    command(sub, "run", "Run the experiment (a grid when a value is a comma list or grid=NAME is given).", cmd_run,
            config=True)
    command(sub, "resume", "Continue an interrupted run: the same result as an uninterrupted one.", cmd_resume,
            overrides="the run folder (runs/NAME)", metavar="RUN")
    p = command(sub, "eval", "Benchmarks on a saved model: metrics to MODEL_PATH-eval.json or --out.", cmd_eval,
                overrides="the model folder, then key=value overrides", metavar="ARG", config=True)
    p.add_argument("--out", metavar="FILE", help="where to write the metrics JSON")
    p.add_argument("--run", metavar="DIR", help="write a run folder (metrics.json, config.yaml) that compare accepts")
    p = command(sub, "compare", "A report (Markdown + HTML) comparing runs with a baseline.", cmd_compare,
                overrides="run folders", metavar="RUN")
    p.add_argument("--baseline", metavar="RUN", help="the baseline run (default: the mlm run, else the first)")
    p.add_argument("--stage", help="the stage compared in every run (default: each run's last)")
    p.add_argument("--out", metavar="DIR", help="the comparison folder")
    p = command(sub, "export", "A plain transformers checkpoint of a run's stage, or of a peft adapter merged "
                "into its (vocabulary-grown) base.", cmd_export, overrides="a run folder or an adapter folder", metavar="SOURCE")
    p.add_argument("--out", metavar="DIR", help="the new checkpoint folder")
    p.add_argument("--stage", help="the run's stage (default: its last)")
    p.add_argument("--merge-adapters", action="store_true", help="merge a peft adapter folder into its base model")
    p.add_argument("--base", metavar="PATH", help="the adapter's base model folder (default: its "
                   "base_model_name_or_path)")
    p = command(sub, "config", "Print the checked plan of a config.", cmd_config, config=True)
    p.add_argument("--resolved", action="store_true", help="print the resolved config YAML instead of the plan")
    command(sub, "strategies", "List the registered strategies.", cmd_strategies, overrides=None)
    p = command(sub, "instructions", "Preview or export a stage's generated instructions as JSONL.",
                cmd_instructions, config=True)
    p.add_argument("--source", help="the instruction source (default: xling, or mlm when active)")
    p.add_argument("--out", metavar="FILE", help="the JSONL file (default: stdout)")
    p.add_argument("--limit", type=int, metavar="N", help="at most N examples (a seeded sample)")
    parser.commands = sub.choices
    return parser


def options(parser: argparse.ArgumentParser) -> list[str]:
    return [s for a in parser._actions for s in a.option_strings if s.startswith("--") and s != "--help"]


def refuse_other_options(name: str, commands: dict, words: list[str]) -> None:
    """An option of another command is refused by name (never silently ignored)."""
    own = options(commands[name])
    others = {o for c in commands.values() for o in options(c)} - set(own)
    for word in words:
        if word == "--":
            return
        if word.split("=", 1)[0] in others:
            takes = ", ".join(own) or "no options"
            raise UserError(f"{word.split('=', 1)[0]} is not an option of `adaptlang {name}` (it takes {takes})")


def parse(argv: list[str]) -> argparse.Namespace:
    """The command word, then its own parser over the rest, options anywhere among the words."""
    parser = build_parser()
    name = parser.parse_args(argv[:1]).command  # --help, --version, or an unknown / missing command
    refuse_other_options(name, parser.commands, argv[1:])
    ns = parser.commands[name].parse_intermixed_args(argv[1:])
    if ns.args and not ns.takes_args:
        raise UserError(f"`adaptlang {name}` takes no arguments (got {' '.join(ns.args)})")
    return ns


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        ns = parse(argv)
        return ns.handler(ns)
    except UserError as exc:
        print(f"adaptlang: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("adaptlang: interrupted", file=sys.stderr)
        return 130


def cmd_run(ns) -> int:
    from .grid import is_grid, run_grid

    if is_grid(ns.args):
        out = run_grid(ns.args, base=ns.config)
        print(f"grid complete; comparison: {out / 'report.html'} ({out / 'report.md'})")
        return 0
    from .config import load_config
    from .pipeline import run

    path = run(load_config(ns.args, base=ns.config))
    print(f"run complete: {path} (report: {path / 'report.md'})")
    return 0


def cmd_resume(ns) -> int:
    from .pipeline import resume

    if len(ns.args) != 1:
        raise UserError("resume needs exactly one run directory: adaptlang resume runs/NAME")
    path = resume(ns.args[0])
    print(f"run complete: {path} (report: {path / 'report.md'})")
    return 0


def cmd_eval(ns) -> int:
    if not ns.args or "=" in ns.args[0]:
        raise UserError("eval needs a model path first: adaptlang eval PATH [key=value ...]")
    from .config import load_config
    from .evaluate import evaluate_path

    out = evaluate_path(ns.args[0], load_config(ns.args[1:], base=ns.config), ns.out, ns.run)
    print(f"metrics written to {out}")
    return 0


def cmd_compare(ns) -> int:
    from .compare import comparison

    out, comp = comparison(ns.args, ns.baseline, ns.out, ns.stage)
    for warning in comp["warnings"]:
        print(f"adaptlang: warning: {warning}", file=sys.stderr)
    print(f"comparison written: {out / 'report.html'} ({out / 'report.md'})")
    return 0


def cmd_export(ns) -> int:
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


def cmd_config(ns) -> int:
    from .config import load_config, to_yaml

    cfg = load_config(ns.args, base=ns.config)
    if ns.resolved:
        print(to_yaml(cfg), end="")
    else:
        from .plan import make_plan

        print(make_plan(cfg).describe(), end="")
    return 0


def cmd_strategies(ns) -> int:
    from .composition import strategy_defaults
    from .strategy import STRATEGIES, load_plugins

    load_plugins()
    for name in STRATEGIES:
        cls = STRATEGIES.get(name)
        doc = (cls.__doc__ or "").strip().splitlines()[0]
        stages = ",".join(strategy_defaults(name)["stages"]) or "-"
        print(f"{name:10s} stages={stages:24s} owns={','.join(sorted(cls.owns)) or '-':28s} {doc}")
    return 0


def cmd_instructions(ns) -> int:
    from .config import load_config
    from .instructions.export import export

    count, where = export(load_config(ns.args, base=ns.config), ns.source, ns.out, ns.limit)
    print(f"{count} instructions written to {where}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
