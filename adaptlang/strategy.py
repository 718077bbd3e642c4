"""The strategy protocol and its registry.

A built-in strategy is a folder under ``adaptlang/strategies/`` plus its YAML; a plugin is a
class in a user's module. Either is registered by name. Every hook is optional; the stage runner
(adaptlang.stage_runner) and the training loop (adaptlang.train) are the only places that
call them. What a strategy declares is read by the plan (adaptlang.plan) before anything
runs:

* ``owns``: what it changes exclusively in a stage ("data.mixture", "embeddings.rows", ...):
  two strategies active in the same stage that own the same thing are refused;
* ``phase``: where it sets up among the strategies of a stage, one of ``PHASES`` (below);
  strategies set up phase by phase, in the user's order within a phase, and are torn down in
  reverse;
* ``builds_examples``: it makes the stage's new examples itself (xling, mlm), so the stage's
  own data is not built;
* ``changes``: what it changes on the model that outlives its stages ("vocabulary": the
  embedding and head sizes grow); everything else it changes (``requires_grad``, wrapped
  modules, hooks) the runner checks is undone when the stage ends;
* ``remembers``: what it keeps from earlier stages and applies later: "model" (a copy of
  the model, which must match the later model's shapes exactly), "parameters" (per-parameter
  tensors; parameters that grew are handled by the strategy), "examples" (token ids);
* ``check_plan``: rules that depend on options or other strategies, checked in the plan.

Options come from ``configs/strategy/<name>.yaml`` (the one place where a built-in
strategy's defaults are written; a plugin strategy without a YAML file takes its
``__init__`` defaults), including ``stages``, the stages it acts in.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from .errors import UserError, listing
from .registry import Registry
from .seeds import derive_seed

# Set-up phases, in order: what a strategy of each phase does and why it comes there. Setting up
# is ``setup_model`` for every strategy in this order, then ``setup_data`` in this order; hooks
# in the loop run in this order too; the end of a stage runs in reverse.
PHASES: dict[str, str] = {
    "examples": "makes the stage's new examples (xling, mlm)",
    "mixture": "mixes other examples into the stage's stream, so it wraps the examples made above (replay)",
    "memory": "remembers the model, its parameters or examples and constrains training with them "
              "(lwf, ewc, si, agem): it reads the final data stream, and at the stage end it takes its "
              "copy after the strategies below have undone or merged their changes",
    "merge": "merges the stage's result with a reference (merge): it copies the stage start before the "
             "strategies below grow or wrap the model, and at the stage end it merges after they merged their "
             "adapters and rows, before memory takes its copy",
    "vocabulary": "grows the tokenizer and the embedding rows (vocab)",
    "model": "changes what trains or wraps the body, keeping what vocabulary made trainable (lora); "
             "the default phase of a strategy that declares none",
    "embeddings": "acts on the embeddings while training, after every other change to the model (af)",
}
DEFAULT_PHASE = "model"


def phase_rank(cls) -> int:
    """The position of a strategy class's ``phase`` in PHASES (a UserError for an unknown one)."""
    phase = getattr(cls, "phase", DEFAULT_PHASE)
    if phase not in PHASES:
        raise UserError(f"strategy '{cls.name or cls.__name__}' declares phase={phase!r}. "
                        f"Valid, in set-up order: {', '.join(PHASES)}")
    return list(PHASES).index(phase)


@dataclass
class StageContext:
    """What a strategy sees while its stage is set up, trained and closed."""

    name: str  # the stage's name
    index: int  # its position in the experiment
    seed: int  # the run's seed: draw with seed_for(purpose), never with arithmetic on it
    train: Any  # the stage's resolved train options (batch_size, max_length, lr, ...)
    languages: Any = None  # adaptlang.languages.LanguageSet of the run
    stage_languages: list = field(default_factory=list)  # codes this stage trains on
    config: Any = None  # the run's resolved config (read-only: data and instruction sources)
    tokenizer: Any = None
    model: Any = None
    notes: dict = field(default_factory=dict)  # strategy figures that go into metrics.json

    def seed_for(self, purpose: str) -> int:
        """The seed of one purpose in this stage (adaptlang.seeds.derive_seed)."""
        return derive_seed(self.seed, self.name, purpose)


@dataclass
class TrainState:
    """Passed to extra_loss / on_gradients / on_step_end: the loop's live objects."""

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
    phase: ClassVar[str] = DEFAULT_PHASE  # one of PHASES: where it sets up in a stage
    stages: ClassVar[tuple[str, ...]] = ()  # default stages of a plugin without a YAML file
    needs_logits: ClassVar[bool] = False  # extra_loss reads outputs.logits (disables the loss shortcut)
    builds_examples: ClassVar[bool] = False  # setup_data makes the stage's new examples itself
    changes: ClassVar[frozenset[str]] = frozenset()  # lasting model changes: "vocabulary"
    remembers: ClassVar[str | None] = None  # "model" | "parameters" | "examples"

    def __init_subclass__(cls, **kwargs: Any):
        super().__init_subclass__(**kwargs)
        if "after" in vars(cls):  # the old ordering attribute: it would be ignored without a word
            raise UserError(f"strategy class {cls.__name__} declares 'after': set-up order is now a "
                            f"phase, e.g. phase = \"{DEFAULT_PHASE}\" (valid: {', '.join(PHASES)})")

    def __init__(self, **options: Any):
        if options:
            raise UserError(f"strategy '{self.name}' has no options {listing(options)}")

    def claims(self) -> frozenset[str]:
        """What this strategy, with its options, owns in its stages (``owns`` by default)."""
        return frozenset(self.owns)

    def train_options(self) -> dict:
        """``train`` keys this strategy sets in the stages it acts in (vocab's
        ``embedding_lr_ratio``). The plan applies them; a stage's own ``train`` setting of the
        same key to another value is refused there."""
        return {}

    @classmethod
    def check_plan(cls, plan, me) -> None:
        """Raise UserError for a combination this strategy cannot run (checked before any stage).
        ``plan`` is the adaptlang.plan.Plan, ``me`` this strategy's PlannedStrategy in it."""

    # --- hooks -----------------------------------------------------------------------
    def setup_model(self, model, tokenizer, ctx: StageContext):
        return model, tokenizer

    def setup_data(self, stream, ctx: StageContext):
        return stream

    def extra_loss(self, batch, outputs, state: TrainState):
        """A term added to the step's loss. ``batch`` always holds ``input_ids`` and ``labels``;
        ``attention_mask`` (2-D padding or 4-D block-diagonal) and ``position_ids`` only where
        they are needed: a right-padded batch of one example per row has neither
        (adaptlang.batching.make_batch)."""
        return None

    def on_gradients(self, state: TrainState) -> None:
        """After the step's backward passes (gradients accumulated and, under DDP, averaged),
        before clipping and the optimizer step: gradient projection (A-GEM), SI's bookkeeping."""

    def on_step_end(self, state: TrainState) -> None:
        pass

    def on_stage_end(self, ctx: StageContext) -> None:
        pass

    def state_dict(self) -> dict:
        """The strategy's state: JSON values and torch tensors (saved as safetensors)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    @classmethod
    def report_section(cls, stage: str, notes: dict) -> list[str]:
        """Markdown lines that present this strategy's ``notes`` of one stage (its entries in
        ``metrics.json`` -> ``stages.<stage>.strategy_notes``) in report.md; none by default."""
        return []


STRATEGIES: Registry[type[Strategy]] = Registry("strategy")


def register_strategy(name: str):
    def add(cls: type[Strategy]) -> type[Strategy]:
        cls.name = name
        phase_rank(cls)  # an unknown phase is refused when the strategy is registered
        return STRATEGIES.register(name)(cls)

    return add


def load_plugins() -> None:
    """Import every built-in strategy module (each registers itself)."""
    from .plugins import import_all

    import_all("adaptlang.strategies")
