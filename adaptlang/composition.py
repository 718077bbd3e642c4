"""Strategy composition: ``"af+replay"`` -> strategies in set-up order with their options.

Each strategy's defaults are written once: in ``configs/strategy/<name>.yaml`` for the
built-in strategies (their ``__init__`` takes keyword options without defaults), or in the
``__init__`` signature of a plugin strategy that has no YAML file. The order is decided
once, in ``compose``, by each strategy's declared ``phase`` (adaptlang.strategy.PHASES), the
given order within a phase. The ``strategy`` section that ``load_config`` writes keeps the
order the user gave, which also names the run (``af+replay-s0``).
Rules between strategies (claims, shapes, options) are checked by the plan
(adaptlang.plan), which knows the stages.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

from .errors import UserError, listing, suggest
from .strategy import STRATEGIES, Strategy, load_plugins, phase_rank
from .yamlfiles import CONFIG_ROOT, read_yaml


def strategy_names(spec: Any) -> list[str]:
    """Names from 'a+b+c', a list, or a mapping of name -> options; 'none' or '' is no strategy."""
    if isinstance(spec, dict) or hasattr(spec, "keys"):
        return [str(k) for k in spec.keys()]
    if isinstance(spec, (list, tuple)):
        return [str(n) for n in spec]
    if spec is None or str(spec).strip() in ("", "none"):
        return []
    names = [n.strip() for n in str(spec).split("+")]
    if any(not n for n in names):
        raise UserError(f"strategy='{spec}': empty name in the composition (use a+b+c)")
    if len(set(names)) != len(names):
        twice = next(n for n in names if names.count(n) > 1)
        raise UserError(f"strategy '{twice}' appears twice in '{spec}'")
    return names


def strategy_class(name: str) -> type[Strategy]:
    load_plugins()
    return STRATEGIES.get(name)  # UserError listing the valid names


def option_names(cls: type[Strategy]) -> list[str]:
    return [p for p, v in inspect.signature(cls.__init__).parameters.items()
            if p != "self" and v.kind not in (v.VAR_KEYWORD, v.VAR_POSITIONAL)]


def strategy_defaults(name: str) -> dict:
    """The default options of a strategy, ``stages`` included."""
    cls = strategy_class(name)
    path = CONFIG_ROOT / "strategy" / f"{name}.yaml"
    if path.is_file():
        options = read_yaml(path)
    else:
        options = {p: v.default for p, v in inspect.signature(cls.__init__).parameters.items()
                   if p in option_names(cls) and v.default is not inspect.Parameter.empty}
    options.setdefault("stages", list(cls.stages))
    return options


def order_strategies(names: list[str]) -> list[str]:
    """Set-up order: by declared phase (adaptlang.strategy.PHASES), the given order within one."""
    ranks = {n: phase_rank(strategy_class(n)) for n in names}
    return sorted(names, key=ranks.__getitem__)  # a stable sort keeps the given order in a phase


def check_options(name: str, options: dict) -> None:
    cls = strategy_class(name)
    valid = option_names(cls)
    for key in options:
        if key != "stages" and key not in valid:
            raise UserError(f"strategy '{name}' has no option '{key}'.{suggest(key, valid)} "
                            f"Valid: {listing(valid + ['stages'])}")


def build_strategy(name: str, **options: Any) -> Strategy:
    """One strategy with its defaults and ``options`` (``stages`` is not an option of the object)."""
    opts = {**strategy_defaults(name), **options}
    opts.pop("stages", None)
    check_options(name, opts)
    strategy = strategy_class(name)(**opts)
    strategy.built_options = dict(opts)  # what the run's config.yaml records (adaptlang.plan)
    return strategy


@dataclass
class Composed:
    """Strategies in set-up order, each with the stages it acts in; ``given``: their names in the
    order they were given (the default run name)."""

    items: list[tuple[Strategy, tuple[str, ...]]]
    given: list[str] = field(default_factory=list)

    def active(self, stage: str) -> list[Strategy]:
        return [s for s, stages in self.items if stage in stages]

    @property
    def names(self) -> list[str]:
        return [s.name for s, _ in self.items]

    def get(self, name: str) -> Strategy | None:
        return next((s for s, _ in self.items if s.name == name), None)


def compose(spec: Any, options: dict | None = None) -> Composed:
    """Build strategies from 'a+b+c', a list, or a resolved ``strategy`` section (name -> options).

    ``options`` maps a strategy name to its keyword options (``stages`` included); missing
    options take the strategy's defaults.
    """
    if hasattr(spec, "items") and not isinstance(spec, dict):  # a DictConfig
        from omegaconf import OmegaConf

        spec = OmegaConf.to_container(spec, resolve=True)
    given = {k: dict(v or {}) for k, v in spec.items()} if isinstance(spec, dict) else {}
    for name, opts in (options or {}).items():
        given[name] = {**given.get(name, {}), **dict(opts)}
    names = strategy_names(spec)
    unknown = [n for n in given if n not in names]
    if unknown:
        raise UserError(f"options given for strategies that are not composed: {listing(unknown)}")
    items = []
    for name in order_strategies(names):
        opts = {**strategy_defaults(name), **given.get(name, {})}
        stages = opts.pop("stages")
        if isinstance(stages, str) or not all(isinstance(s, str) for s in stages):
            raise UserError(f"strategy.{name}.stages={stages!r}: a list of stage names, e.g. [adapt]")
        items.append((build_strategy(name, **opts), tuple(stages)))
    return Composed(items, names)
