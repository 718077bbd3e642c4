"""The language table (corpora/languages.tsv) and language sets (configs/languages/*.yaml).

A language set names classes of languages, e.g. the active-forgetting paper's Table 6:
pretraining (12), adapting (14) and other. A stage refers to a class by name
(``languages: adapting``) or to explicit codes (``languages: [fr, de]``).

A set may also declare ``base``: the languages the base model already knows (codes or
class names), e.g. ``base: [en, id]`` for the NusaX set (BLOOMZ's languages among the
NusaX ones, Instruct-Align section 4.1). Benchmarks that mark languages pretrained / seen /
unseen (benchmarks/classify.py ``language_status``) read it: pretrained = base, seen =
trained in any stage of the experiment, unseen = the rest.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

from .errors import UserError, listing, suggest

CORPORA = Path(str(resources.files("adaptlang") / "corpora"))


@dataclass(frozen=True)
class Language:
    code: str
    name: str
    flores: str | None
    ntrex: str | None
    udhr: str | None


def load_table(path: Path = CORPORA / "languages.tsv") -> dict[str, Language]:
    table = {}
    with open(path, encoding="utf-8") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            get = lambda k, row=row: None if row.get(k, "-") in ("-", "", None) else row[k]  # noqa: E731
            table[row["code"]] = Language(row["code"], row["name"], get("flores"), get("ntrex"), get("udhr"))
    return table


class LanguageSet:
    """Classes of languages; every code must be in the language table (or declared extra)."""

    def __init__(self, classes: dict[str, list[str]], table: dict[str, Language] | None = None, extra: dict | None = None,
                 base: Iterable[str] | str | None = None):
        self.table = dict(table or load_table())
        for code, info in (extra or {}).items():
            info = dict(info or {})
            self.table[code] = Language(code, info.get("name", code), None, None, None)
        if not classes:
            raise UserError("language set: no classes defined")
        self.classes = {}
        seen: dict[str, str] = {}
        for cls, codes in classes.items():
            codes = list(codes or [])
            for code in codes:
                self.check(code, where=f"language class '{cls}'")
                if code in seen:
                    raise UserError(f"language '{code}' is in both class '{seen[code]}' and '{cls}'")
                seen[code] = cls
            self.classes[cls] = codes
        self.base: list[str] | None = None
        if base is not None:
            items = [base] if isinstance(base, str) else [str(b) for b in base]
            codes = []
            for item in items:
                if item in self.classes:
                    codes += self.classes[item]
                else:
                    self.check(item, where="the language set's base (the base model's languages: codes or "
                                           f"class names {listing(self.classes)})")
                    codes.append(item)
            self.base = list(dict.fromkeys(codes))

    @classmethod
    def from_config(cls, cfg: Any) -> "LanguageSet":
        base = cfg.get("base")
        if base is not None and not isinstance(base, str):
            base = list(base)
        return cls(dict(cfg.classes), extra=dict(cfg.get("extra") or {}), base=base)

    def check(self, code: str, where: str = "") -> Language:
        if code not in self.table:
            at = f" in {where}" if where else ""
            raise UserError(
                f"unknown language code '{code}'{at}.{suggest(code, self.table)} Valid: {listing(self.table)}"
            )
        return self.table[code]

    def class_of(self, code: str) -> str:
        for cls, codes in self.classes.items():
            if code in codes:
                return cls
        return "unlisted"

    def all_codes(self) -> list[str]:
        return [c for codes in self.classes.values() for c in codes]

    def resolve(self, spec: str | Iterable[str]) -> list[str]:
        """A class name, 'all', or a list of codes/class names -> list of codes."""
        items = [spec] if isinstance(spec, str) else list(spec)
        out: list[str] = []
        for item in items:
            if item == "all":
                out.extend(self.all_codes())
            elif item in self.classes:
                out.extend(self.classes[item])
            else:
                if item not in self.table:
                    raise UserError(
                        f"'{item}' is neither a language class ({listing(self.classes)}) nor a known "
                        f"language code.{suggest(item, list(self.classes) + list(self.table))}"
                    )
                out.append(item)
        return list(dict.fromkeys(out))
