"""XQuAD and MLQA as released (SQuAD-format JSON) -> the layout of ``eval.lm_eval.local_data``.

The AF paper's reading-comprehension tasks (``af_xquad``, ``af_mlqa``) read the hub datasets
``google/xquad`` and ``facebook/mlqa``. Offline, give their original release files instead:

    python -m adaptlang.benchmarks.squad_local xquad/xquad.*.json --out /data/xquad
    adaptlang run ... eval.lm_eval.tasks=[af_xquad] eval.lm_eval.local_data.af_xquad=/data/xquad

XQuAD: ``xquad.<lang>.json`` (github.com/google-deepmind/xquad) -> ``xquad.<lang>/validation.jsonl``;
MLQA: ``{dev,test}-context-<c>-question-<q>.json`` -> ``mlqa.<c>.<q>/{validation,test}.jsonl``.
Each row is the hub's: ``id``, ``context``, ``question``, ``answers: {text: [...], answer_start: [...]}``.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from adaptlang.errors import UserError

XQUAD = re.compile(r"^xquad\.([a-z]{2})\.json$")
MLQA = re.compile(r"^(dev|test)-context-([a-z]{2})-question-([a-z]{2})\.json$")
MLQA_SPLITS = {"dev": "validation", "test": "test"}


def target_of(path: Path) -> tuple[str, str]:
    """(dataset name, split) for a release file name; a name of neither release is refused."""
    if m := XQUAD.match(path.name):
        return f"xquad.{m[1]}", "validation"
    if m := MLQA.match(path.name):
        return f"mlqa.{m[2]}.{m[3]}", MLQA_SPLITS[m[1]]
    raise UserError(f"{path}: not an XQuAD or MLQA release file name "
                    "(expected xquad.<lang>.json or dev|test-context-<lang>-question-<lang>.json)")


def rows_of(path: Path) -> list[dict]:
    """The question rows of one SQuAD-format file, in file order."""
    try:
        release = json.loads(path.read_text(encoding="utf-8"))
        return [{"id": qa["id"], "context": paragraph["context"], "question": qa["question"],
                 "answers": {"text": [a["text"] for a in qa["answers"]],
                             "answer_start": [a["answer_start"] for a in qa["answers"]]}}
                for article in release["data"] for paragraph in article["paragraphs"] for qa in paragraph["qas"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{path}: not a SQuAD-format JSON file (data > paragraphs > qas with id, question, "
                        f"answers; {type(exc).__name__}: {exc})") from None


def convert(files: list[Path], out: Path) -> dict[str, int]:
    """Write each file's rows to ``out/<dataset name>/<split>.jsonl``; {written path: rows}."""
    targets = [target_of(path) for path in files]   # every name, then every file, checked before writing
    planned = [(rows_of(path), *target) for path, target in zip(files, targets)]
    written = {}
    for rows, name, split in planned:
        target = out / name / f"{split}.jsonl"
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".jsonl.partial")
        partial.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        partial.replace(target)   # no half-written file under the name the harness reads
        written[str(target)] = len(rows)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m adaptlang.benchmarks.squad_local", description=__doc__.split("\n")[0])
    parser.add_argument("files", nargs="+", type=Path, help="xquad.<lang>.json or MLQA dev/test files")
    parser.add_argument("--out", type=Path, required=True, help="the folder to give as eval.lm_eval.local_data.<task>")
    args = parser.parse_args(argv)
    try:
        written = convert(args.files, args.out)
    except UserError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    for target, n in written.items():
        print(f"{n:6d} rows  {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
