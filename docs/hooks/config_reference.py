"""mkdocs hook: the configuration reference, written at build time from the shipped YAML files.

`docs/configuration.md` holds the placeholder `<!-- config-reference -->`; this hook replaces it
with tables built from `adaptlang/configs/base.yaml` and `adaptlang/configs/strategy/*.yaml`
(every key, its default as written and its comment) and the header comments of the group files
(model, languages, experiment, grid). The page therefore cannot drift from the configs: a key
added, removed or re-commented there changes the page on the next build.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from mkdocs.exceptions import PluginError

PLACEHOLDER = "<!-- config-reference -->"
PAGE = "configuration.md"
KEY = re.compile(r"^(?P<indent>\s*)(?P<key>[A-Za-z_][\w-]*):(?:\s+(?P<rest>.*))?$")


def split_comment(text: str) -> tuple[str, str]:
    """`value  # comment` -> (value, comment), ignoring a # inside quotes or brackets' strings."""
    quote = None
    for i, ch in enumerate(text):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or text[i - 1].isspace()):
            return text[:i].strip(), text[i + 1:].strip()
    return text.strip(), ""


def parse(path: Path) -> tuple[str, list[dict]]:
    """The file's header comment and its keys in order: path, value as written, comment, is_section."""
    lines = path.read_text(encoding="utf-8").splitlines()
    header, entries, stack = [], [], []  # stack: (indent, key)
    in_header = True
    for line in lines:
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            comment = stripped[1:].strip()
            if in_header:
                text = stripped[1:]
                header.append((text[1:] if text.startswith(" ") else text).rstrip())
            elif entries:
                entries[-1]["comment"] = (entries[-1]["comment"] + " " + comment).strip()
            continue
        match = KEY.match(line)
        if not match:  # a list item or a flow value continued on the next line: part of the last key
            if entries:
                value, comment = split_comment(stripped)
                entries[-1]["value"] = (entries[-1]["value"] + " " + value).strip()
                entries[-1]["comment"] = (entries[-1]["comment"] + " " + comment).strip()
            continue
        in_header = False
        indent = len(match["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        value, comment = split_comment(match["rest"] or "")
        stack.append((indent, match["key"]))
        entries.append({"path": ".".join(k for _, k in stack), "value": value, "comment": comment,
                        "section": value == ""})
    return "\n".join(header).strip(), entries


def check_against_yaml(path: Path, entries: list[dict]) -> None:
    """Every parsed key must be a key of the loaded YAML, and every leaf key must have been parsed."""
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    parsed = {e["path"] for e in entries}

    def leaves(node, prefix=""):
        for key, value in node.items():
            full = f"{prefix}{key}"
            yield full
            if isinstance(value, dict) and value:
                yield from leaves(value, full + ".")

    loaded = set(leaves(data))
    if loaded != parsed:
        raise PluginError(f"config reference: {path} parsed keys differ from YAML keys: "
                          f"missing {sorted(loaded - parsed)}, extra {sorted(parsed - loaded)}")


def cell(text: str) -> str:
    return text.replace("|", "&#124;").replace("<", "&lt;").replace(">", "&gt;")


def prose(text: str) -> str:
    """A header comment as one Markdown paragraph (angle brackets kept as text)."""
    return " ".join(text.split()).replace("<", "&lt;").replace(">", "&gt;")


def code(value: str) -> str:
    if value == "":
        return ""
    return "<code>" + cell(value) + "</code>"


def table(entries: list[dict], prefix: str) -> list[str]:
    out = ["| key | default | meaning |", "|---|---|---|"]
    for e in entries:
        if e["section"] and not e["comment"]:
            continue
        key = f"{prefix}{e['path']}"
        out.append(f"| <code>{cell(key)}</code> | {'(group)' if e['section'] else code(e['value'])} | "
                   f"{cell(e['comment'])} |")
    return out


def reference(root: Path) -> str:
    configs = root / "adaptlang" / "configs"
    out: list[str] = []

    base = configs / "base.yaml"
    header, entries = parse(base)
    check_against_yaml(base, entries)
    out += ["## base.yaml", "", f"`adaptlang/configs/base.yaml`. {prose(header)}", ""]
    top = [e for e in entries if "." not in e["path"] and not e["section"]]
    out += ["### Top-level keys", "", *table(top, ""), ""]
    for section in (e for e in entries if "." not in e["path"] and e["section"]):
        name = section["path"]
        inner = [e for e in entries if e["path"].startswith(name + ".")]
        out += [f"### `{name}`", ""]
        if section["comment"]:
            out += [prose(section["comment"][:1].upper() + section["comment"][1:]), ""]
        out += [*table(inner, ""), ""]

    out += ["## Strategies", "",
            "Each strategy's options live under `strategy.<name>.*` (e.g. `strategy.af.every=50`); "
            "`stages` lists the stages it acts in. Source: `adaptlang/configs/strategy/<name>.yaml`.", ""]
    for path in sorted((configs / "strategy").glob("*.yaml")):
        header, entries = parse(path)
        check_against_yaml(path, entries)
        out += [f"### `{path.stem}`", "", prose(header), "",
                *table(entries, f"strategy.{path.stem}."), ""]

    out += ["## Group files", "",
            "A group value is a file name from `adaptlang/configs/<group>/` (or a path to a YAML file). "
            "The shipped files, with their own description:", ""]
    for group in ("model", "languages", "experiment", "grid"):
        out += [f"### `{group}=`", ""]
        for path in sorted((configs / group).glob("*.yaml")):
            header, entries = parse(path)
            out += [f"**`{group}={path.stem}`**", ""]
            out += (["```text", header, "```", ""] if header else ["(no description)", ""])
            if group == "model":  # a model file is flat settings: list them as model.<key>
                check_against_yaml(path, entries)
                out += [*table(entries, "model."), ""]
    return "\n".join(out)


def on_page_markdown(markdown, page, config, files, **kwargs):
    if page.file.src_uri != PAGE:
        return markdown
    if PLACEHOLDER not in markdown:
        raise PluginError(f"config reference: {PAGE} has no {PLACEHOLDER} placeholder")
    root = Path(config["config_file_path"]).resolve().parent
    return markdown.replace(PLACEHOLDER, reference(root))
