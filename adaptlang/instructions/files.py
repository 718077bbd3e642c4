"""Instruction data from the user's files and the hub (``data.instructions``).

    data:
      instructions:
        orca: {path: hub:Open-Orca/OpenOrca, fields: openorca, language: en, max_rows: 20000}
        aya:  {path: data/aya.parquet, fields: aya, language_field: language_code}
        mine: {path: my/folder, fields: {instruction: task, input: context, output: answer}}

Each entry is a named instruction source, used wherever a built-in one is (a stage's
``data.sources``, ``strategy.replay.source``: the past data that replay samples its r
examples from). ``path`` is a JSONL / JSON / CSV / Parquet file, a folder of them, or
``hub:<name>[:<config>]``; read through ``datasets`` (a local file as memory-mapped Arrow; a
folder or hub dataset streamed, the first ``max_rows`` rows after a seeded shuffle buffer).

``fields`` maps the roles of one shape to the source's columns (or names a preset):

* ``instruction`` / ``input`` (optional) / ``output``: Alpaca-style, formatted with
  ``templates/english.yaml``; preset ``alpaca``;
* ``inputs`` / ``targets``: the prompt and the answer as they are (xP3, BLOOMZ's tuning data;
  Aya); presets ``xp3``, ``aya``; the target is separated by one space, as xP3 was trained;
* ``system`` (optional) / ``question`` / ``response``: OpenOrca (the active-forgetting
  paper's instruction data); preset ``openorca``; prompt = system, blank line, question, newline;
* ``messages``: a chat, a list of ``{role, content}``; the last assistant turn is the target,
  the turns before it the prompt (``<role>: <content>`` lines, then ``assistant:``); preset ``chat``.

The language of each example is ``language`` (fixed) or the value of ``language_field``
(a column), kept as the example's ``target_language`` (replay's ``balanced`` policy groups by
it). A mapping that names a column the source does not have is refused before training,
with the columns found.
"""
from __future__ import annotations

import itertools
from pathlib import Path

import datasets

from ..errors import UserError, listing, suggest
from ..sources import _open, _reading_error

SHAPES = {  # role group -> (required roles, optional roles)
    "alpaca": (("instruction", "output"), ("input",)),
    "xp3": (("inputs", "targets"), ()),
    "openorca": (("question", "response"), ("system",)),
    "chat": (("messages",), ()),
}
PRESETS = {
    "alpaca": {"instruction": "instruction", "input": "input", "output": "output"},
    "xp3": {"inputs": "inputs", "targets": "targets"},
    "aya": {"inputs": "inputs", "targets": "targets"},
    "openorca": {"system": "system_prompt", "question": "question", "response": "response"},
    "chat": {"messages": "messages"},
}
SPEC_KEYS = ("path", "fields", "language", "language_field", "split", "max_rows", "streaming")
SHUFFLE_BUFFER = 10_000


def _where(name: str) -> str:
    return f"data.instructions.{name}"


def check_spec(name: str, spec) -> dict:
    """The entry ``name``'s spec, checked for its shape (not its columns: see ``check_columns``)."""
    where = _where(name)
    if not isinstance(spec, dict):
        raise UserError(f"{where}: a mapping with keys {listing(SPEC_KEYS)} (path and fields at least)")
    for key in spec:
        if key not in SPEC_KEYS:
            raise UserError(f"{where}: unknown key '{key}'.{suggest(str(key), SPEC_KEYS)} Valid: {listing(SPEC_KEYS)}")
    if not spec.get("path"):
        raise UserError(f"{where}.path: a JSONL/CSV/Parquet file, a folder of them, or hub:<name>[:<config>]")
    fields = spec.get("fields")
    if isinstance(fields, str):
        if fields not in PRESETS:
            raise UserError(f"{where}.fields={fields}: unknown preset.{suggest(fields, PRESETS)} Valid: {listing(PRESETS)} "
                            f"or a mapping role -> column")
        fields = dict(PRESETS[fields])
    if not isinstance(fields, dict) or not fields:
        raise UserError(f"{where}.fields: a preset ({listing(PRESETS)}) or a mapping role -> column, "
                        f"roles from one shape: " + "; ".join(f"{k}: {listing(r + o)}" for k, (r, o) in SHAPES.items()))
    shape = next((k for k, (req, opt) in SHAPES.items() if set(req) <= set(fields) <= set(req + opt)), None)
    if shape is None:
        raise UserError(f"{where}.fields: roles {listing(fields)} are not one shape; valid: "
                        + "; ".join(f"{k}: {listing(r)} (+ {listing(o) or 'nothing'})" for k, (r, o) in SHAPES.items()))
    if bool(spec.get("language")) == bool(spec.get("language_field")):
        raise UserError(f"{where}: give either language (a code for every row) or language_field (a column)")
    max_rows = spec.get("max_rows")
    if max_rows is not None and int(max_rows) < 1:
        raise UserError(f"{where}.max_rows={max_rows}: must be >= 1 or null")
    return {"name": name, "path": str(spec["path"]), "fields": {k: str(v) for k, v in fields.items()}, "shape": shape,
            "language": spec.get("language"), "language_field": spec.get("language_field"),
            "split": str(spec.get("split") or "train"), "max_rows": None if max_rows is None else int(max_rows),
            "streaming": spec.get("streaming")}


def _load(spec: dict):
    path = spec["path"]
    try:
        if path.startswith("hub:"):
            repo, _, config = path[4:].partition(":")
            return datasets.load_dataset(repo, config or None, split=spec["split"], streaming=True)
        if spec["streaming"] and Path(path).is_file():
            from ..sources import _builder_for
            return datasets.load_dataset(_builder_for(Path(path)), data_files=path, split="train", streaming=True)
    except Exception as exc:  # datasets wraps the cause; the user needs its one line
        raise UserError(_reading_error(path, exc)) from None
    return _open(path)


def check_columns(spec: dict, columns) -> None:
    columns = list(columns or [])
    optional = SHAPES[spec["shape"]][1]  # an optional role's column may be absent (alpaca without input)
    wanted = [c for r, c in spec["fields"].items() if r not in optional] + (
        [spec["language_field"]] if spec["language_field"] else [])
    missing = [c for c in wanted if c not in columns]
    if missing:
        raise UserError(f"{_where(spec['name'])}: column(s) {listing(missing)} not in {spec['path']}; "
                        f"columns found: {listing(columns) or 'none'}")


def columns_of(spec: dict) -> list[str]:
    """The columns of a local source (for the plan's check); hub sources are checked when read."""
    ds = _load(spec)
    names = ds.column_names
    if names is None:  # a streamed folder without features: look at the first row
        names = list(next(iter(ds), {}))
    return list(names)


def _format(role: dict, shape: str, templates: dict) -> tuple[str, str] | None:
    if shape == "alpaca":
        instruction, extra = (role["instruction"] or "").strip(), (role.get("input") or "").strip()
        template = templates["with_input"] if extra else templates["without_input"]
        return template.format(instruction=instruction, input=extra), (role["output"] or "").strip()
    if shape == "xp3":
        return (role["inputs"] or "").strip(), " " + (role["targets"] or "").strip()
    if shape == "openorca":
        system = (role.get("system") or "").strip()
        return (f"{system}\n\n" if system else "") + (role["question"] or "").strip() + "\n", (role["response"] or "").strip()
    turns = list(role["messages"] or [])
    last = max((i for i, t in enumerate(turns) if t.get("role") == "assistant"), default=None)
    if last is None:
        return None
    context = "".join(f"{t.get('role')}: {(t.get('content') or '').strip()}\n" for t in turns[:last])
    return context + "assistant:", " " + (turns[last].get("content") or "").strip()


def read_source(spec: dict, seed: int, templates: dict, limit: int | None = None) -> list[dict]:
    """The examples of a checked spec: every row of a local file; of a streamed folder or hub
    dataset, the first ``max_rows`` (or ``limit``) rows after a seeded shuffle buffer."""
    ds = _load(spec)
    streamed = isinstance(ds, datasets.IterableDataset)
    if not streamed or ds.column_names is not None:
        check_columns(spec, ds.column_names)
    rows_wanted = spec["max_rows"] or (limit if streamed else None)
    try:
        if streamed:
            ds = ds.shuffle(seed=seed, buffer_size=SHUFFLE_BUFFER)
            rows = ds if rows_wanted is None else itertools.islice(ds, rows_wanted)
        else:
            rows = ds if rows_wanted is None else ds.select(range(min(rows_wanted, len(ds))))
        out = []
        for i, row in enumerate(rows):
            if i == 0 and streamed and ds.column_names is None:
                check_columns(spec, list(row))
            made = _format({r: row.get(c) for r, c in spec["fields"].items()}, spec["shape"], templates)
            if made is None or not made[0].strip() or not made[1].strip():
                continue
            lang = str(spec["language"] or row[spec["language_field"]])
            out.append({"prompt": made[0], "target": made[1], "source_language": lang, "target_language": lang,
                        "template_id": f"file:{spec['shape']}", "origin": spec["name"]})
    except UserError:
        raise
    except Exception as exc:
        raise UserError(_reading_error(spec["path"], exc)) from None
    if not out:
        raise UserError(f"{_where(spec['name'])}: no usable rows in {spec['path']}")
    return out
