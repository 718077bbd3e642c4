"""The plan: a config resolved once, before anything runs, into one checked, printable object.

    plan = make_plan(load_config(["strategy=af+vocab", "experiment=paper"]))
    print(plan.describe())          # what `adaptlang config ...` prints

``make_plan`` checks everything that can be checked without training: the experiment's
stages and their data, the languages, the benchmarks, each strategy's options and stages,
and every rule between strategies and stages:

* two strategies active in one stage that claim the same thing (``Strategy.claims``) are
  refused, with the stage named;
* a strategy that remembers the model (``remembers = "model"``: LwF's teacher) cannot apply
  its copy across a stage in which another strategy changes the vocabulary (vocab): the
  copy's embedding table would not match the model it is applied to;
* each strategy's own ``check_plan`` (rules that depend on options).

A refused plan is one line (a UserError) and nothing is written. The pipeline
(adaptlang.pipeline) runs the plan's stages with the plan's strategies.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf

from . import instructions
from .benchmarks import check_benchmarks
from .compiling import check_compile
from .config import is_trained_checkpoint
from .config_rules import check_values
from .composition import Composed, compose
from .errors import UserError, listing, suggest
from .languages import LanguageSet
from .mixture import Mixture, check_weights, mixture_of, parse_tokens, target_shares, tokens_per_step
from .models import check_architecture, check_model_path
from .named_models import resolve as resolve_checkpoint
from .prechecks import check_before_training, check_model_config
from .rundir import plain_name, run_name
from .schedules import check_schedule
from .sources import bad_shard_line, check_source, training_source
from .text_budget import check_budgets
from .trackers import check_trackers, tracker_names

DATA_KINDS = ("text", "instructions")
STAGE_KEYS = ("name", "data", "steps", "tokens", "train")


@dataclass(frozen=True)
class PlannedStrategy:
    name: str
    stages: tuple[str, ...]
    options: dict  # without ``stages``
    claims: frozenset


@dataclass(frozen=True)
class PlannedStage:
    name: str
    index: int
    kind: str  # text | instructions
    languages: tuple[str, ...]  # resolved codes
    sources: tuple[str, ...]  # instruction sources (kind: instructions)
    steps: int  # after train.max_steps
    train: dict  # the resolved train options of this stage
    strategies: tuple[str, ...]  # active in set-up order
    data: str  # where its training examples come from, in words
    mixture: Mixture | None = None  # text stages: language shares, repetition, replay (adaptlang.mixture)
    replay_languages: tuple[str, ...] = ()  # earlier text stages' languages replayed (mixture.replay > 0)
    tokens: int | None = None  # the stage's token budget (``tokens:``), from which ``steps`` was computed

    @property
    def block_draws(self) -> int:
        """Examples (language-modelling blocks, in a text stage) the stage draws in all its steps."""
        return self.steps * int(self.train["batch_size"]) * int(self.train.get("grad_accum", 1))


@dataclass
class Plan:
    name: str
    seed: int
    stages: list[PlannedStage]
    strategies: list[PlannedStrategy]
    benchmarks: list[str]
    training_text: dict[str, str]  # language -> its training text source (languages of text stages)
    config: DictConfig = field(repr=False)
    languages: LanguageSet = field(repr=False)
    composed: Composed = field(repr=False)
    base_tokenizer: Any = field(default=None, repr=False)  # a local checkpoint's tokenizer, for checks
    warnings: list[str] = field(default_factory=list)  # one line each: allowed, but probably not meant

    def stage(self, name: str) -> PlannedStage:
        return next(s for s in self.stages if s.name == name)

    def strategy(self, name: str) -> PlannedStrategy | None:
        return next((s for s in self.strategies if s.name == name), None)

    def active(self, stage: str) -> list[PlannedStrategy]:
        return [s for s in self.strategies if stage in s.stages]

    def evaluates(self, stage: str) -> bool:
        """Whether the benchmarks run after ``stage`` (eval.stages: all | last | stage names)."""
        return stage in evaluated_stages(self.config, [s.name for s in self.stages])

    @property
    def evaluates_base(self) -> bool:
        """Whether the starting model is evaluated as stage ``base`` (eval.base: auto = for a
        trained checkpoint; a model built from scratch starts random, so its forgetting is
        measured from its first stage instead)."""
        setting = str(self.config.eval.get("base", "auto"))
        return is_trained_checkpoint(self.config.model) if setting == "auto" else setting == "true"

    def to_dict(self) -> dict:
        model = self.config.model
        return {
            "run": self.name,
            "seed": self.seed,
            "model": (f"trained checkpoint {model.name_or_path}" if is_trained_checkpoint(model)
                      else f"built from config ({model.get('architecture', 'mistral')}, random init)"),
            "experiment": str(self.config.experiment.get("description") or "from the config's stages"),
            "starting model evaluated as stage 'base'": self.evaluates_base,
            **({"warnings": self.warnings} if self.warnings else {}),
            "stages": [{
                "name": s.name, "steps": s.steps, **_text_figures(s, self._has_text), "data": s.data,
                "strategies": {n: self.strategy(n).options for n in s.strategies} or "none",
                "train": {**{k: s.train[k] for k in ("batch_size", "lr", "schedule", "max_length", "block_size",
                                                     "packing") if k in s.train},
                          **({"embedding_lr_ratio": s.train["embedding_lr_ratio"]}
                             if s.train.get("embedding_lr_ratio", 1.0) != 1.0 else {})},
            } for s in self.stages],
            "strategies (set-up order)": [s.name for s in self.strategies] or "none",
            "evaluation after each stage": {"benchmarks": self.benchmarks,
                                            "stages": [s.name for s in self.stages if self.evaluates(s.name)],
                                            "max_sentences": self.config.eval.get("max_sentences")},
            "training text": self._text_by_source(),
            "progress and tracking": {
                "lines": f"every {self.config.train.log_every} steps or {self.config.train.get('log_seconds')} s "
                         "(stderr when it is not a terminal; train.log)",
                "trackers": tracker_names(self.config.train.get("report_to")) or "none",
                "compile": bool(self.config.train.get("compile", False))},
            "seeds": f"run seed {self.seed}; every draw seeded by (seed, stage, purpose) (adaptlang.seeds)",
        }

    def _has_text(self, code: str) -> bool:
        return training_source(code, self.languages, self.config)[0] is not None

    def _text_by_source(self) -> dict:
        grouped: dict[str, list[str]] = {}
        for code, source in self.training_text.items():
            grouped.setdefault(source, []).append(code)
        return {source: " ".join(codes) for source, codes in grouped.items()}

    def describe(self) -> str:
        head = "# adaptlang plan: checked; `adaptlang run` with the same arguments runs exactly this\n"
        return head + yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True, width=110)


def _text_figures(stage: PlannedStage, has_text) -> dict:
    """A text stage's tokens (budget and steps) and mixture, as the plan prints them (the
    target shares of the languages that ``has_text``)."""
    if stage.kind != "text":
        return {}
    per_step = tokens_per_step(stage.train)
    out: dict[str, Any] = {"tokens": f"{stage.steps * per_step:,} ({stage.steps} steps x {per_step:,} tokens)"}
    if stage.tokens is not None:
        out["tokens"] += f"; budget {stage.tokens:,}"
    mixture = stage.mixture
    if mixture is None or not mixture.active:
        return out
    own = [c for c in stage.languages if has_text(c)]
    past = [c for c in stage.replay_languages if has_text(c)]
    out["mixture"] = mixture.describe()
    if mixture.replay:
        out["mixture"]["replayed languages"] = " ".join(past) or "none (no earlier text stage)"
    if mixture.alpha == 0 or (not past and own and set(own) <= set(mixture.weights)):
        shares = target_shares({c: 1 for c in own + past}, mixture, own, past)
        out["target shares"] = {c: round(p, 4) for c, p in shares.items()}
    else:
        out["target shares"] = ("p_i ~ n_i^alpha over the tokens available, counted when the stage's text is "
                                "tokenized (train.log; metrics.json target_shares)")
    return out


def evaluated_stages(cfg: DictConfig, names: list[str]) -> list[str]:
    """The stages after which the benchmarks run (``eval.stages``); a name not among ``names``
    is a UserError listing them."""
    setting = cfg.eval.get("stages", "all")
    if isinstance(setting, str):
        if setting == "all":
            return list(names)
        if setting == "last":
            return names[-1:]
        setting = [setting]
    chosen = [str(s) for s in setting]
    for stage in chosen:
        if stage not in names:
            raise UserError(f"eval.stages: unknown stage '{stage}'.{suggest(stage, names)} Use all, last, "
                            f"or stage names of this experiment: {listing(names)}")
    return [n for n in names if n in chosen]


def stage_train_config(cfg: DictConfig, stage: DictConfig) -> DictConfig:
    own = stage.get("train") or {}
    for key in own:
        if key not in cfg.train:
            raise UserError(f"experiment stage '{stage.name}': unknown train key '{key}'.{suggest(key, cfg.train)} "
                            f"Valid: {listing(cfg.train)}")
    return OmegaConf.merge(cfg.train, own)


def stage_steps(cfg: DictConfig, stage: DictConfig, train: DictConfig | None = None) -> int:
    """``steps:``, or ``tokens:`` in whole optimizer steps of a text stage; capped by ``train.max_steps``."""
    given = [k for k in ("steps", "tokens") if stage.get(k) is not None]
    if len(given) != 1:
        raise UserError(f"experiment stage '{stage.get('name')}': give "
                        f"{'either steps or tokens, not both' if given else 'steps (or tokens: for a text stage)'}")
    if given == ["tokens"]:
        if stage.data.get("kind") != "text":
            raise UserError(f"experiment stage '{stage.name}': tokens: is a budget of language-model text; "
                            "give steps for an instruction stage")
        tokens = parse_tokens(stage.tokens, f"experiment stage '{stage.name}': tokens")
        steps = max(1, math.ceil(tokens / tokens_per_step(train if train is not None else cfg.train)))
    else:
        steps = int(stage.steps)
    cap = cfg.train.get("max_steps")
    return min(steps, int(cap)) if cap is not None else steps


def _plan_stage(index: int, stage: DictConfig, cfg: DictConfig, languages: LanguageSet,
                composed: Composed, past: list[str]) -> PlannedStage:
    """One stage, checked; ``past``: the languages of the earlier text stages (replayed by
    ``data.mixture.replay``)."""
    for key in stage:
        if key not in STAGE_KEYS:
            raise UserError(f"experiment stage '{stage.get('name')}': unknown key '{key}'."
                            f"{suggest(key, STAGE_KEYS)} Valid: {listing(STAGE_KEYS)}")
    kind = stage.data.get("kind")
    if kind not in DATA_KINDS:
        raise UserError(f"stage '{stage.name}': data.kind='{kind}'.{suggest(str(kind), DATA_KINDS)} "
                        f"Valid: {listing(DATA_KINDS)}")
    codes = languages.resolve(stage.data.get("languages", "all"))
    sources = tuple(stage.data.get("sources", []) or []) if kind == "instructions" else ()
    if kind == "instructions":
        for source in sources:
            instructions.check_source(source, cfg, where=f"stage '{stage.name}': data.sources")
    tcfg = stage_train_config(cfg, stage)
    active = composed.active(str(stage.name))
    for strategy in active:
        for key, value in strategy.train_options().items():
            own = (stage.get("train") or {}).get(key)
            if own is not None and own != value:
                raise UserError(f"stage '{stage.name}': train.{key}={own} but strategy.{strategy.name} sets {value} "
                                "in the stages it acts in; give one of them")
            tcfg[key] = value
    check_schedule(tcfg.schedule, where=f"stage '{stage.name}': train.schedule")
    builder = next((s.name for s in active if s.builds_examples), None)
    spec = stage.data.get("languages", "all")
    where = f"{spec} ({len(codes)})" if isinstance(spec, str) else f"{len(codes)} languages"
    if builder:
        data = f"new examples built by strategy '{builder}' on {where}"
    elif kind == "text":
        data = f"language-model text of {where}"
    else:
        data = f"instructions from {', '.join(sources) or '(none)'} on {where}"
    mixture, replayed = None, ()
    if kind == "text" and not builder:
        mixture = mixture_of(cfg.data.get("mixture"), stage.data.get("mixture"), f"stage '{stage.name}'")
        check_weights(mixture, str(stage.name), codes)
        if mixture.replay:
            replayed = tuple(c for c in dict.fromkeys(past) if c not in codes)
    tokens = (parse_tokens(stage.tokens, f"experiment stage '{stage.name}': tokens")
              if stage.get("tokens") is not None else None)
    return PlannedStage(str(stage.name), index, str(kind), tuple(codes), sources, stage_steps(cfg, stage, tcfg),
                        OmegaConf.to_container(tcfg, resolve=True), tuple(s.name for s in active), data,
                        mixture, replayed, tokens)


def _check_claims(plan: Plan) -> None:
    for stage in plan.stages:
        active = [plan.strategy(n) for n in stage.strategies]
        for i, a in enumerate(active):
            for b in active[i + 1:]:
                shared = a.claims & b.claims
                if shared:
                    raise UserError(
                        f"strategies '{a.name}' and '{b.name}' conflict in stage '{stage.name}': both own "
                        f"{listing(shared)}; use one of them, or let them act in different stages "
                        f"(strategy.{a.name}.stages / strategy.{b.name}.stages)")


def _check_copies(plan: Plan) -> None:
    """A copy of the model taken after stage j and applied in stage k must match the model of
    stage k: no vocabulary change in between (stages j+1 .. k)."""
    order = [s.name for s in plan.stages]
    for keeper in plan.strategies:
        cls = type(plan.composed.get(keeper.name))
        if cls.remembers != "model":
            continue
        acting = [i for i, name in enumerate(order) if name in keeper.stages]
        for j, k in zip(acting, acting[1:]):
            for i in range(j + 1, k + 1):
                for other in plan.active(order[i]):
                    if "vocabulary" in type(plan.composed.get(other.name)).changes:
                        later = [order[x] for x in acting if x >= i]
                        raise UserError(
                            f"strategies '{other.name}' and '{keeper.name}' cannot be combined this way: "
                            f"{keeper.name} keeps the model of stage '{order[j]}' and applies it in stage "
                            f"'{order[k]}', but {other.name} changes the vocabulary in stage '{order[i]}', so that "
                            f"copy cannot read the new token ids. Let {keeper.name} act only from that stage on "
                            f"(strategy.{keeper.name}.stages=[{','.join(later)}]) or only before it, or use ewc or si "
                            f"(they leave the new rows out)")


def _trained_checkpoint_warnings(plan: Plan) -> list[str]:
    af = plan.strategy("af")
    if af is None or not is_trained_checkpoint(plan.config.model):
        return []
    return [f"af acts in stage(s) {', '.join(af.stages)} on the trained checkpoint {plan.config.model.name_or_path}: "
            f"active forgetting is a pretraining method (active-forgetting paper, section 3) and will "
            f"re-initialise its embeddings every {af.options.get('every')} steps"]


def _local_tokenizer(cfg: DictConfig):
    """The tokenizer of a local ``model.name_or_path`` (cheap to read), so that strategies can
    check it before training; None for a hub name or a model built from config."""
    path = cfg.model.get("name_or_path")
    if path:
        path = resolve_checkpoint(str(path))  # a name or GGUF file: fetched and dequantised once, before anything trains
    if not path or not Path(str(path)).is_dir():
        return None
    from transformers import AutoTokenizer

    if (Path(str(path)) / "config.json").is_file():
        check_architecture(str(path), bool(cfg.model.get("trust_remote_code")))
    try:
        return AutoTokenizer.from_pretrained(str(path), trust_remote_code=bool(cfg.model.get("trust_remote_code")))
    except Exception:  # noqa: BLE001 -- loading the model reports what is wrong with the folder
        return None


def make_plan(cfg: DictConfig, composed: Composed | None = None) -> Plan:
    """Resolve and check ``cfg`` (and strategies built from it, or ``composed``) into a Plan."""
    check_values(cfg)  # again: a config may have been changed in Python since load_config
    languages = LanguageSet.from_config(cfg.languages)
    if composed is not None:  # composed in Python: the config records what will run, not its own strategy section
        # (strategies built by name, with their options; an instance made directly, e.g. a test's
        # fault injector, cannot be rebuilt from a config and is left out of it)
        cfg.strategy = OmegaConf.create({s.name: {**s.built_options, "stages": list(stages)}
                                         for s, stages in composed.items if hasattr(s, "built_options")})
    composed = composed if composed is not None else compose(cfg.strategy)
    names = [plain_name(s.name, "experiment stage name") for s in cfg.experiment.stages]  # stages/<name>/
    if len(set(names)) != len(names):
        raise UserError(f"experiment: duplicate stage names in {names}")
    planned_strategies = []
    for strategy, stages in composed.items:
        for stage in stages:
            if stage not in names:
                raise UserError(f"strategy.{strategy.name}.stages: unknown stage '{stage}'.{suggest(stage, names)} "
                                f"Stages of this experiment: {listing(names)}")
        options = {}
        if strategy.name in (cfg.get("strategy") or {}):
            options = OmegaConf.to_container(cfg.strategy[strategy.name], resolve=True)
            options.pop("stages", None)
        planned_strategies.append(PlannedStrategy(strategy.name, tuple(stages), options, frozenset(strategy.claims())))
    stages: list[PlannedStage] = []
    for i, st in enumerate(cfg.experiment.stages):
        past = [c for s in stages if s.kind == "text" for c in s.languages]
        stages.append(_plan_stage(i, st, cfg, languages, composed, past))
    for key in ("train_files", "eval_files"):
        for code, source in (cfg.data.get(key) or {}).items():
            languages.check(code, where=f"data.{key}")
            check_source(str(source), where=f"data.{key}.{code}")
            problem = bad_shard_line(str(source))
            if problem:
                raise UserError(f"data.{key}.{code}: {problem}")
    if cfg.model.get("name_or_path"):
        check_model_path(str(cfg.model.name_or_path))
    check_model_config(cfg)
    benchmarks = list(cfg.eval.benchmarks)
    check_benchmarks(benchmarks, cfg, languages)
    evaluated_stages(cfg, names)
    for key in ("pretrained_languages", "seen_languages"):  # the classification status (benchmarks/classify.py)
        value = (cfg.eval.get("classify") or {}).get(key)
        if value is not None:
            try:
                languages.resolve(value if isinstance(value, str) else [str(v) for v in value])
            except UserError as exc:
                raise UserError(f"eval.classify.{key}: {exc}") from None
    check_trackers(cfg.train.get("report_to"))
    if any(s.train.get("compile") for s in stages):
        check_compile(str(cfg.device))
    text = {}
    for stage in stages:
        if stage.kind == "text" and not any(composed.get(n).builds_examples for n in stage.strategies):
            for code in stage.languages:
                source, why = training_source(code, languages, cfg)
                text[code] = why if source is None else f"{why}: {source}" if why.startswith("user") else why
    name = str(cfg.get("name") or run_name(composed.given, int(cfg.seed)))  # as the user wrote them
    plan = Plan(name, int(cfg.seed), stages, planned_strategies, benchmarks, text, cfg, languages, composed,
                _local_tokenizer(cfg))
    if plan.evaluates_base and "base" in names:
        raise UserError("experiment: a stage is named 'base', the name of the starting model's evaluation "
                        "(eval.base); rename the stage, or set eval.base=false")
    _check_claims(plan)
    _check_copies(plan)
    plan.warnings += _trained_checkpoint_warnings(plan)
    if any(st.kind == "instructions" for st in stages):
        if not is_trained_checkpoint(cfg.model):  # a tokenizer trained from scratch has no chat template
            instructions.check_chat_template(cfg, None, "a model built from config")
        elif plan.base_tokenizer is not None:
            instructions.check_chat_template(cfg, plan.base_tokenizer, str(cfg.model.name_or_path))
    for planned in plan.strategies:
        type(composed.get(planned.name)).check_plan(plan, planned)
    check_before_training(plan)
    plan.warnings += check_budgets(plan)  # data.mixture.repeat=false: no stage needs more text than there is
    return plan
