"""Configuration: a base YAML, config groups, strategy composition, key=value overrides.

    load_config(["strategy=af+replay", "strategy.af.every=200", "model=tiny", "seed=1"])

Order of application (torchtune's habit):
  1. ``configs/base.yaml``;
  2. group selections (``model=``, ``languages=``, ``experiment=``): the named file from
     ``configs/<group>/`` (or a path to a YAML file) becomes that key's value; an
     experiment's ``settings`` (dotted keys, e.g. ``train.schedule: linear``) are applied
     after step 3, before step 4; its ``at_model`` entry for the chosen model (e.g.
     ``mistral-400m``) replaces its stages and adds settings (``apply_at_model``);
  3. ``strategy=a+b``: each name's defaults from ``configs/strategy/<name>.yaml`` go under
     ``strategy.<name>``, in the order given (adaptlang.composition.compose sets them up by phase);
  4. every other ``dotted.key=value`` override, checked against the keys that exist: a
     typo is an error that suggests the nearest key, never a silent no-op.

Values are parsed as YAML scalars/lists (never evaluated as code). The working directory
is never changed. What the keys mean together (stages, strategies per stage, cross-strategy
rules, data, benchmarks) is checked by the plan (adaptlang.plan), before anything runs.
"""
from __future__ import annotations

import datetime
import re
import sys
from pathlib import Path
from typing import Any, Iterable

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf

from .composition import order_strategies, strategy_defaults, strategy_names
from .config_rules import BOOLEAN_WORDS, as_number, check_values
from .errors import UserError, listing, suggest
from .yamlfiles import CONFIG_ROOT, read_yaml

GROUPS = ("model", "languages", "experiment")
# A trained checkpoint (a model config with name_or_path) run without experiment= / strategy=
# gets these instead of base.yaml's from-scratch pipeline and af+replay: active forgetting is
# a pretraining method, and a pretraining stage would start the checkpoint over.
TRAINED_DEFAULTS = {"experiment": "pretrained", "strategy": "vocab+replay"}
# Mappings whose keys are the user's own (language codes, file names): any key is accepted.
FREE_FORM = {"data.train_files", "data.eval_files", "data.instructions", "eval.lm_eval.local_data",
             "eval.samples.prompts", "data.mixture.weights"}


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_ROOT / group).glob("*.yaml"))


def load_group(group: str, choice: str) -> dict:
    path = Path(choice)
    if choice.endswith((".yaml", ".yml")):
        if not path.is_file():
            raise UserError(f"{group}={choice}: file not found")
        return read_yaml(path)
    path = CONFIG_ROOT / group / f"{choice}.yaml"
    if not path.is_file():
        options = group_options(group)
        raise UserError(
            f"unknown {group} '{choice}'.{suggest(choice, options)} Valid: {listing(options)} "
            f"(or a path to a .yaml file)"
        )
    return read_yaml(path)


def is_trained_checkpoint(model: Any) -> bool:
    """A model config that loads a checkpoint (model=pretrained, model=smollm2-135m) rather
    than building a model from scratch."""
    return isinstance(model, (dict, DictConfig)) and bool(model.get("name_or_path"))


def parse_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise UserError(f"override {text!r} is not of the form key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise UserError(f"override {text!r} has an empty key")
    if not re.fullmatch(r"[A-Za-z0-9_.\-]+", key):
        raise UserError(f"override key {key!r} is not a dotted name (letters, digits, _ - .)")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw  # not YAML: take the literal string
    if isinstance(value, (datetime.date, datetime.datetime)):
        value = raw.strip()  # name=2024-01-01: a YAML timestamp, which no config key takes
    return key, value


# Keys that take either a class name or a list of language codes.
EITHER_STR_OR_LIST = ("languages", "benchmarks", "sources")
EITHER_STR_OR_LIST_KEYS = ("eval.stages", "strategy.replay.source")  # all | last | stage names; one source or several


def _check_type(key: str, old: Any, new: Any) -> None:
    if old is None or new is None or key.rsplit(".", 1)[-1] in EITHER_STR_OR_LIST or key in EITHER_STR_OR_LIST_KEYS:
        return
    if isinstance(old, bool) != isinstance(new, bool):
        raise UserError(f"{key}={new!r}: expected {type(old).__name__} (like {old!r}), got {type(new).__name__}")
    if isinstance(old, (int, float)) and not isinstance(old, bool):
        if not isinstance(new, (int, float)):
            raise UserError(f"{key}={new!r}: expected a number (like {old!r})")
        if isinstance(old, int) and isinstance(new, float) and not new.is_integer():
            raise UserError(f"{key}={new!r}: expected an integer (like {old!r})")
    elif isinstance(old, str) and isinstance(new, (list, dict)):
        raise UserError(f"{key}={new!r}: expected a string (like {old!r})")
    elif isinstance(old, (list, ListConfig)) and not isinstance(new, (list, ListConfig)):
        raise UserError(f"{key}={new!r}: expected a list (like {list(old)!r})")


def _stage_train_path(parts: list[str]) -> bool:
    """``experiment.stages.N.train.KEY``: any stage may set any ``train`` option, not only
    those its experiment file lists."""
    return len(parts) == 5 and parts[:2] == ["experiment", "stages"] and parts[3] == "train"


def _stage_train_key(parts: list[str], i: int, cfg: DictConfig) -> bool:
    """A stage train path (``...N.train`` missing, or KEY missing there) whose KEY is a ``train`` key."""
    return _stage_train_path(parts) and i in (3, 4) and parts[4] in cfg.get("train", {})


def _stage_own_key(parts: list[str]) -> bool:
    """``experiment.stages.N.tokens`` or ``experiment.stages.N.data.mixture[.KEY...]``: stage keys
    that an experiment file need not list (checked by the plan, adaptlang.mixture)."""
    return len(parts) >= 4 and parts[:2] == ["experiment", "stages"] and (
        parts[3:] == ["tokens"] or parts[3:5] == ["data", "mixture"])


def apply_override(cfg: DictConfig, key: str, value: Any) -> None:
    parts = key.split(".")
    if _stage_own_key(parts) and OmegaConf.select(cfg, ".".join(parts[:3])) is not None:
        OmegaConf.update(cfg, key, value, merge=True)
        return
    node: Any = cfg
    for i, part in enumerate(parts):
        here = ".".join(parts[:i])
        if here in FREE_FORM:
            OmegaConf.update(cfg, key, value, merge=False)
            return
        if isinstance(node, ListConfig):
            if not part.isdigit() or int(part) >= len(node):
                raise UserError(f"unknown key '{key}': '{here}' is a list of {len(node)} items")
            child = node[int(part)]
        elif isinstance(node, DictConfig):
            if part not in node and _stage_train_key(parts, i, cfg):
                OmegaConf.update(cfg, key, value, merge=True)  # a train key this stage did not set yet
                return
            if part not in node:
                where = f" under '{here}'" if here else ""
                valid = [str(k) for k in node.keys()]
                if _stage_train_path(parts) and i in (3, 4):  # a stage may set any train key
                    part, where, valid = parts[4], f" under '{'.'.join(parts[:4])}'", [str(k) for k in cfg.train]
                if here == "strategy":
                    raise UserError(
                        f"unknown key '{key}': strategy '{part}' is not active.{suggest(part, valid)} "
                        f"Active: {listing(valid)} (compose with strategy=a+b)"
                    )
                raise UserError(f"unknown key '{key}'{where}.{suggest(part, valid)} Valid: {listing(valid)}")
            child = node[part]
        else:
            raise UserError(f"unknown key '{key}': '{here}' is a value ({node!r}), not a section")
        node = child
    old = OmegaConf.to_container(node) if isinstance(node, (DictConfig, ListConfig)) else node
    if isinstance(node, DictConfig) and not isinstance(value, dict):
        raise UserError(f"{key}={value!r}: '{key}' is a section; set one of its keys: {listing(node.keys())}")
    if isinstance(old, (int, float)) and not isinstance(old, bool):
        value = as_number(value)  # train.lr=1e-4
    if isinstance(old, str) and isinstance(value, bool):
        value = BOOLEAN_WORDS.get(key, {}).get(value, value)  # mixed_precision=no
    _check_type(key, old, value)
    OmegaConf.update(cfg, key, value, merge=False)


def load_config(overrides: Iterable[str] = (), base: str | Path | None = None) -> DictConfig:
    """Resolve a config from the base file (or a saved run's config.yaml) and overrides."""
    pairs = [parse_override(o) for o in overrides]
    if base is not None:
        base_path = Path(base)
        if not base_path.is_file():
            raise UserError(f"config file {base} not found")
        raw = read_yaml(base_path)
        missing = [k for k in read_yaml(CONFIG_ROOT / "base.yaml") if k not in raw]
        if missing:
            raise UserError(f"--config {base}: not a complete config (no {listing(missing)}); --config takes a "
                            "resolved config such as a run's config.yaml: for a few settings pass key=value "
                            "overrides, or an experiment/model file (experiment=FILE.yaml)")
        model = raw.get("model")
        if isinstance(model, dict) and model.get("trust_remote_code") and not any(
                k == "model.trust_remote_code" for k, _ in pairs):
            # a config file that came with a run folder never runs a model folder's Python code:
            # only the current command line can allow that
            model["trust_remote_code"] = False
            print(f"adaptlang: ignored model.trust_remote_code=true from {base_path} (foreign code runs only "
                  "with model.trust_remote_code=true on the command line)", file=sys.stderr)
    else:
        raw = read_yaml(CONFIG_ROOT / "base.yaml")

    selections = {k: v for k, v in pairs if k in GROUPS or k == "strategy"}
    model_choice = selections.get("model", raw.get("model"))
    for group in GROUPS:
        choice = selections.get(group, raw.get(group))
        if isinstance(choice, str):
            raw[group] = load_group(group, choice)
            named_path = any(k == "model.name_or_path" and v for k, v in pairs)
            if group == "model" and base is None and (is_trained_checkpoint(raw["model"]) or named_path):
                for key, default in TRAINED_DEFAULTS.items():
                    if key not in selections:
                        raw[key] = default
        elif isinstance(choice, dict):
            raw[group] = choice  # experiment={stages: [...]}
        elif group in selections:
            raise UserError(f"{group}={choice!r}: expected a name from {listing(group_options(group))}")
    if isinstance(raw.get("experiment"), dict):
        apply_at_model(raw["experiment"], model_choice)
    stages = raw["experiment"].get("stages") if isinstance(raw.get("experiment"), dict) else None
    if not isinstance(stages, list) or not stages or not all(isinstance(s, dict) for s in stages):
        raise UserError(f"experiment={selections.get('experiment', raw.get('experiment'))!s:.80}: needs a 'stages' "
                        "list of {name, data, steps} (like configs/experiment/default.yaml)")

    spec = selections.get("strategy", raw.get("strategy"))
    if isinstance(spec, dict) and "strategy" not in selections:
        resolved = {name: dict(opts or {}) for name, opts in spec.items()}
        for name, opts in resolved.items():
            defaults = strategy_defaults(name)
            resolved[name] = {**defaults, **opts}
    else:
        resolved = {}
        for name in strategy_names(spec):
            if name in resolved:
                raise UserError(f"strategy '{name}' appears twice in '{spec}'")
            resolved[name] = strategy_defaults(name)
    raw["strategy"] = resolved

    cfg = OmegaConf.create(raw)
    if base is None or "experiment" in selections:  # a saved config already holds them
        apply_experiment_settings(cfg)
        fit_default_stages(cfg)
    for key, value in pairs:
        if key in GROUPS or key == "strategy":
            continue
        apply_override(cfg, key, value)

    order_strategies(list(cfg.strategy.keys()))  # an unknown phase fails here; the section keeps the given order
    check_values(cfg)
    return cfg


def apply_at_model(experiment: dict, model_choice: Any) -> None:
    """An experiment file's ``at_model: {MODEL: {stages, settings}}``: with ``model=MODEL`` its
    stages replace the experiment's and its settings are added to (and win over) the
    experiment's, e.g. the AF paper's stated data at its 400M size (configs/experiment/paper.yaml).
    The mapping is dropped either way: the resolved config holds what runs."""
    variants = experiment.pop("at_model", None) or {}
    name = Path(str(model_choice)).stem if isinstance(model_choice, str) else None
    variant = variants.get(name) if name else None
    if isinstance(variant, str):  # another experiment's entry, its stages of this experiment's names
        names = [st.get("name") for st in experiment.get("stages") or []]
        variant = dict((load_group("experiment", variant).get("at_model") or {}).get(name) or {})
        variant["stages"] = [st for st in variant.get("stages") or [] if st.get("name") in names]
    if not variant:
        return
    if variant.get("stages"):
        experiment["stages"] = variant["stages"]
    if variant.get("settings"):
        experiment["settings"] = {**(experiment.get("settings") or {}), **variant["settings"]}


def fit_default_stages(cfg: DictConfig) -> None:
    """A strategy left at its default stages acts in those the experiment has: replay's
    default [pretrain, adapt, instruct] becomes [adapt, instruct] in an experiment without a
    pretraining stage. Stages the user names are kept as given (the plan refuses unknown
    ones), and so is a default none of whose stages exist (the plan says so)."""
    names = [str(st.get("name")) for st in cfg.experiment.stages]
    for name, options in cfg.strategy.items():
        stages = list(options.get("stages") or [])
        kept = [st for st in stages if st in names]
        if kept and kept != stages and stages == list(strategy_defaults(str(name)).get("stages") or []):
            options.stages = kept


def apply_experiment_settings(cfg: DictConfig) -> None:
    """An experiment file's ``settings`` (dotted key -> value) are applied after the base and
    before the command line's overrides (which win); ``strategy.<name>.*`` keys only when that
    strategy is active, so a paper's strategy options sit next to its stages."""
    settings = cfg.experiment.get("settings") if isinstance(cfg.experiment, DictConfig) else None
    for key, value in (OmegaConf.to_container(settings, resolve=True) if settings else {}).items():
        parts = str(key).split(".")
        if parts[0] == "strategy" and len(parts) > 2 and parts[1] not in cfg.strategy:
            continue
        apply_override(cfg, str(key), value)


def to_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg)
