"""The shipped YAML files (``adaptlang/configs``) and one safe reader for every YAML file."""
from __future__ import annotations

from importlib import resources
from pathlib import Path

import yaml

from .errors import UserError

CONFIG_ROOT = Path(str(resources.files("adaptlang") / "configs"))


def read_yaml(path: Path) -> dict:
    """A YAML mapping (an empty file is {}); a syntax error or a non-mapping is a UserError."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data
