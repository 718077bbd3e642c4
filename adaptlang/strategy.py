"""The strategy protocol, its registry, and the composer.

A strategy is a small class in its own file under ``adaptlang/strategies/``, registered by
name. Every hook is optional; the training loop (adaptlang.train) is the only place that
calls them. ``owns`` declares what a strategy changes exclusively, so that two strategies
claiming the same thing are refused before any training starts; ``after`` names the
strategies that must set up before it when both are active.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import inspect

from .errors import UserError, listing, suggest
from .registry import Registry


@dataclass
class StageContext:
    """What a strategy can see while a stage is being set up or trained."""

    name: str
    index: int
    config: Any  # the run's resolved config (DictConfig)
    stage: Any  # this stage's config
    languages: Any  # adaptlang.languages.LanguageSet
    seed: int
    tokenizer: Any = None
    model: Any = None
    notes: dict = field(default_factory=dict)  # strategy figures that go into metrics.json


@dataclass
class TrainState:
    """Passed to on_step_end / extra_loss: the loop's live objects."""

    step: int  # optimizer steps done in this stage (1-based after the first step)
    total_steps: int
    model: Any
    optimizer: Any  # the torch optimizer (unwrapped from accelerate)
    ctx: StageContext
    loss: float = float("nan")


class Strategy:
    """Base class: every method is optional. Options come from ``strategy.<name>`` keys."""

    name: ClassVar[str] = ""
    owns: ClassVar[frozenset[str]] = frozenset()
    after: ClassVar[tuple[str, ...]] = ()
    stages: ClassVar[tuple[str, ...]] = ()  # default stages it acts in (overridable in config)
    needs_logits: ClassVar[bool] = False  # extra_loss reads outputs.logits (disables the loss shortcut)

    def __init__(self, **options: Any):
        if options:
            raise UserError(f"strategy '{self.name}' has no options {listing(options)}")

    # --- hooks -----------------------------------------------------------------------
    def setup_model(self, model, tokenizer, ctx: StageContext):
        return model, tokenizer

    def setup_data(self, stream, ctx: StageContext):
        return stream

    def extra_loss(self, batch, outputs, state: TrainState):
        return None

    def on_gradients(self, state: TrainState) -> None:
        """After the step's backward passes (gradients accumulated and, under DDP, averaged),
        before clipping and the optimizer step: gradient projection (A-GEM), SI's bookkeeping."""

    def on_step_end(self, state: TrainState) -> None:
        pass

    def on_stage_end(self, ctx: StageContext) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


STRATEGIES: Registry[type[Strategy]] = Registry("strategy")


def register_strategy(name: str):
    def add(cls: type[Strategy]) -> type[Strategy]:
        cls.name = name
        return STRATEGIES.register(name)(cls)

    return add


def _load_plugins() -> None:
    from .plugins import import_all

    import_all("adaptlang.strategies")


def order_strategies(names: list[str]) -> list[str]:
    """Order by declared dependencies (stable otherwise); refuse conflicting claims."""
    _load_plugins()
    classes = {n: STRATEGIES.get(n) for n in names}
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            shared = classes[a].owns & classes[b].owns
            if shared:
                raise UserError(
                    f"strategies '{a}' and '{b}' conflict: both own {listing(shared)}; use one of them"
                )
    ordered: list[str] = []
    visiting: set[str] = set()

    def visit(n: str) -> None:
        if n in ordered:
            return
        if n in visiting:
            raise UserError(f"strategy dependency cycle through '{n}'")
        visiting.add(n)
        for dep in classes[n].after:
            if dep in classes:
                visit(dep)
        visiting.discard(n)
        ordered.append(n)

    for n in names:
        visit(n)
    return ordered


@dataclass
class Composed:
    """Strategies in set-up order, each with the stages it acts in."""

    items: list[tuple[Strategy, tuple[str, ...]]]

    def active(self, stage: str) -> list[Strategy]:
        return [s for s, stages in self.items if stage in stages]

    @property
    def names(self) -> list[str]:
        return [s.name for s, _ in self.items]


def compose(spec: Any, options: dict | None = None) -> Composed:
    """Build strategies from 'a+b+c' (or a list / a resolved ``strategy`` config section).

    ``options`` maps a strategy name to its keyword options (``stages`` included).
    """
    from .config import strategy_defaults, strategy_names

    from omegaconf import DictConfig, OmegaConf

    if isinstance(spec, DictConfig):
        spec = OmegaConf.to_container(spec)
    names = list(spec) if isinstance(spec, (list, dict)) else strategy_names(spec)
    if isinstance(spec, dict):
        options = {**{k: dict(v or {}) for k, v in spec.items()}, **(options or {})}
    items = []
    for name in order_strategies(names):
        opts = {**strategy_defaults(name), **dict((options or {}).get(name, {}))}
        stages = tuple(opts.pop("stages"))
        cls = STRATEGIES.get(name)
        valid = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "options")]
        for key in opts:
            if key not in valid:
                raise UserError(f"strategy '{name}' has no option '{key}'.{suggest(key, valid)} "
                                f"Valid: {listing(valid + ['stages'])}")
        strategy = cls(**opts)
        items.append((strategy, stages))
    return Composed(items)
