"""The values the config's keys accept: type, range, choices, and whether null means something.

``check_values(cfg)`` runs at the end of ``load_config``, so a bad value is one line before
any plan is made or anything is written -- also for keys whose default is ``null``, which the
override's type check (adaptlang.config) cannot compare against. Each ``train.KEY`` rule also
holds for an experiment stage's own ``train: {KEY: ...}``. Integers given as ``16.0`` are
stored as ``16``. A strategy plugin with options of its own may add ``RULES["strategy.NAME.KEY"]``.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from .errors import UserError, listing


@dataclass(frozen=True)
class Rule:
    kind: str  # int | number | choice | text | list
    low: float | None = None
    high: float | None = None
    above: bool = False  # low is exclusive (> low), else inclusive
    null: str = ""  # what null means; "" = null is not accepted
    choices: tuple = ()

    def wanted(self) -> str:
        if self.kind == "choice":
            text = f"one of {listing(self.choices)}"
        elif self.kind == "list":
            text = "a list"
        elif self.kind == "text":
            text = "a name (text)"
        else:
            text = "an integer" if self.kind == "int" else "a number"
            if self.low is not None and self.high is not None:
                text += (f" > {_number(self.low)} and <= {_number(self.high)}" if self.above
                         else f" from {_number(self.low)} to {_number(self.high)}")
            elif self.low is not None:
                text += f" {'>' if self.above else '>='} {_number(self.low)}"
        return text + (f" (or null: {self.null})" if self.null else "")


# 1e-4 is a number in YAML 1.2 and a string to PyYAML (YAML 1.1), on the command line and in files
EXPONENT_NUMBER = re.compile(r"[-+]?(\d+(\.\d*)?|\.\d+)[eE][-+]?\d+")
# YAML 1.1 reads `no` as false: mixed_precision=no means the choice "no"
BOOLEAN_WORDS = {"mixed_precision": {False: "no"}, "eval.base": {True: "true", False: "false"},
                 "data.chat_template": {True: "true", False: "false"}}


def as_number(value: Any) -> Any:
    """``value``, or the float it spells when it is a string such as ``1e-4``."""
    return float(value) if isinstance(value, str) and EXPONENT_NUMBER.fullmatch(value.strip()) else value


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _int(low=None, high=None, null=""):
    return Rule("int", low, high, null=null)


def _num(low=None, high=None, above=False, null=""):
    return Rule("number", low, high, above, null)


RULES: dict[str, Rule] = {
    "name": Rule("text", null="<strategies>-s<seed>"),
    "seed": _int(),
    "device": Rule("choice", choices=("auto", "cpu")),
    "mixed_precision": Rule("choice", choices=("no", "fp16", "bf16")),
    "train.batch_size": _int(1),
    "train.grad_accum": _int(1),
    "train.lr": _num(0),
    "train.weight_decay": _num(0),
    "train.eps": _num(0),
    "train.warmup_ratio": _num(0, 1),
    "train.decay_ratio": _num(0, 1),
    "train.max_grad_norm": _num(0),
    "train.block_size": _int(2),
    "train.max_length": _int(2),
    "train.embedding_lr_ratio": _num(0, above=True),
    "train.log_every": _int(1),
    "train.log_seconds": _num(0, above=True, null="30 s"),
    "train.max_steps": _int(1, null="no cap"),
    "train.checkpoint_every": _int(0),
    "data.max_lines_per_language": _int(1, null="every line"),
    "data.num_proc": _int(1),
    "data.cache_dir": Rule("text", null="a temporary cache of the run"),
    "data.chat_template": Rule("choice", choices=("auto", "true", "false")),
    "eval.base": Rule("choice", choices=("auto", "true", "false")),
    "eval.benchmarks": Rule("list"),
    "eval.max_sentences": _int(1, null="all"),
    "eval.batch_size": _int(1),
    "eval.isotropy.sentences": _int(2),
    "eval.flores.shots": _int(0),
    "eval.flores.sentences": _int(1),
    "eval.flores.max_new_tokens": _int(1),
    "eval.classify.max_examples": _int(1, null="all"),
    "eval.classify.scoring": Rule("choice", choices=("label_sum", "sequence_mean")),
    "eval.lm_eval.num_fewshot": _int(0, null="0"),
    "eval.lm_eval.limit": _int(1, null="all"),
    "eval.lm_eval.batch_size": _int(1, null="32"),
    "strategy.mlm.max_sentences": _int(1, null="all"),
    "strategy.xling.max_pairs": _int(1, null="all"),
    "strategy.ewc.decay_factor": _num(0, 1, null="needed with mode=online"),
    "strategy.vocab.embedding_lr_ratio": _num(0, above=True, null="leave train.embedding_lr_ratio as it is"),
    "strategy.merge.method": Rule("choice", choices=("linear", "task_arithmetic", "ties", "dare_linear", "dare_ties")),
    "strategy.merge.weight": _num(0, 1),
    "strategy.merge.density": _num(0, 1, above=True),
    "strategy.merge.reference": Rule("choice", choices=("start", "base")),
    "strategy.merge.chat_vector.instruct": Rule("text", null="no chat vector"),
    "strategy.merge.chat_vector.base": Rule("text", null="no chat vector"),
    "strategy.merge.chat_vector.weight": _num(0),
}


def checked(key: str, value: Any, rule: Rule) -> Any:
    """``value`` if ``rule`` accepts it (an integral float as an int), else a UserError."""
    if value is None:
        if rule.null:
            return None
        raise UserError(f"{key}: needs a value: {rule.wanted()}")
    bad = UserError(f"{key}={value!r}: expected {rule.wanted()}")
    if rule.kind == "choice":
        value = BOOLEAN_WORDS.get(key, {}).get(value, value) if isinstance(value, bool) else value
        if value not in rule.choices:
            raise bad
        return value
    if rule.kind == "text":
        if isinstance(value, (list, dict, bool)) or value == "":
            raise bad
        return str(value)  # name=2024, name=0.001, name=2024-01-01 (a date to YAML)
    if rule.kind == "list":
        if not isinstance(value, (list, ListConfig)):
            raise UserError(f"{key}={value!r}: expected a list" + (f" (like [{value}])" if isinstance(value, str) else ""))
        return value
    value = as_number(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise bad
    if rule.kind == "int":
        if isinstance(value, float) and not value.is_integer():
            raise bad
        value = int(value)
    too_low = rule.low is not None and (value <= rule.low if rule.above else value < rule.low)
    if too_low or (rule.high is not None and value > rule.high):
        raise bad
    return value


def check_values(cfg: DictConfig) -> None:
    """Check (and normalise) every key of ``cfg`` that has a rule, and each stage's own train keys."""
    for key, rule in RULES.items():
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(cfg, parent) if parent else cfg
        if isinstance(node, DictConfig) and leaf in node:
            node[leaf] = checked(key, _plain(node[leaf]), rule)
    stages = cfg.experiment.get("stages") if isinstance(cfg.get("experiment"), DictConfig) else None
    for i, stage in enumerate(stages or []):
        if not isinstance(stage, DictConfig):
            continue
        if "steps" in stage:
            stage.steps = checked(f"experiment.stages.{i}.steps", _plain(stage.steps),
                                  _int(1, null="a text stage's tokens: budget instead"))
        own = stage.get("train")
        for leaf in own if isinstance(own, DictConfig) else ():
            rule = RULES.get(f"train.{leaf}")
            if rule is not None:
                own[leaf] = checked(f"experiment.stages.{i}.train.{leaf}", _plain(own[leaf]), rule)


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value) if isinstance(value, (DictConfig, ListConfig)) else value
