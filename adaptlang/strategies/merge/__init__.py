"""Merge the stage's result back with a reference at the end of each of its stages.

Model merging is the cheapest fix for forgetting in recent language-adaptation recipes
(SEA-LION's DARE-TIES, Aya Expanse, Branch-and-Merge, arXiv 2407.08699): train, then pull the
weights part of the way back to where they started. For every parameter

    task vector  tau    = trained - reference
    merged              = reference + merge([tau], [weight], density)

and the saved stage model is the merged one (``on_stage_end``, before the stage is saved).

* ``reference: start`` (the default): the stage's start, copied in ``setup_model``.
  ``reference: base``: the run's starting model, the model before the first stage. It is copied
  when merge sets up in the plan's first stage, so the plan refuses ``reference=base`` unless
  merge acts in the first stage; the copy is kept (and checkpointed) for the later stages.
* Methods, with one task vector: ``linear`` is ``torch.lerp(reference, trained, weight)``
  (mergekit's linear, a weighted average of the two models, exact at weight 0 and 1);
  ``task_arithmetic``, ``ties`` (magnitude top-``density`` then sign election) and
  ``dare_linear`` / ``dare_ties`` (random drop with rescaling by 1/``density``) are peft's
  functions on ``tau``. Every entry whose task-vector entry comes back unchanged takes the
  trained value itself, so weight 1 at density 1 is the trained model bit for bit and weight 0
  is the reference bit for bit, for every method.
* DARE's random masks come from the global torch generator, which peft's ``random_pruning``
  uses: it is forked and seeded with ``ctx.seed_for("merge")``, and parameters are merged in
  ``named_parameters`` order, so a run (and a resumed run) draws the same masks.
* ``chat_vector: {instruct, base, weight}`` (adaptlang.strategies.merge.chat_vector, arXiv
  2310.04799): after the merge, ``weight * (instruct - base)`` is added to the stage's model;
  rows added by vocab get no delta, and shapes that cannot match are refused by the plan.
* Rows that vocab added during the stage (or since the base, for ``reference: base``) have no
  reference: only the reference's rows are merged, the new rows are kept as trained. A tied
  LM head is the embedding's own tensor (``named_parameters`` lists it once), so it is merged
  once and stays tied.

Library: peft's merge utilities (``peft.utils.merge_utils``: task_arithmetic, ties,
dare_linear, dare_ties), already a dependency (vocab and lora use peft), Apache-2.0, and they
act on tensors, which is what a merge inside a running pipeline has. mergekit works on model
folders, pins its own transformers range and is LGPL-3.0.

Phase ``merge``: it sets up after the memory strategies and before vocab and lora, so its copy
of the stage start is taken before the vocabulary grows or adapters wrap the body; at the stage
end it runs after lora and vocab merged their adapters and rows, and before the memory
strategies (EWC, LwF, ...) take their copy, so they remember the merged model that the next
stage starts from.
"""
from __future__ import annotations

import logging
import warnings

import torch

from ...config_rules import RULES, checked
from ...errors import UserError, listing
from ...strategy import StageContext, Strategy, register_strategy
from . import chat_vector as chatvec

log = logging.getLogger("adaptlang")

METHODS = RULES["strategy.merge.method"].choices
REFERENCES = ("start", "base")


def merge_tensor(reference: torch.Tensor, trained: torch.Tensor, method: str, weight: float,
                 density: float) -> torch.Tensor:
    """``reference`` merged with ``trained`` (same shape) by ``method``. DARE draws its mask from
    the global torch generator (seed it before calling)."""
    if method == "linear":
        return torch.lerp(reference, trained, weight)
    from peft.utils import merge_utils

    tau = trained - reference
    weights = torch.tensor([weight], dtype=tau.dtype, device=tau.device)
    with warnings.catch_warnings():  # peft warns that density 1 prunes nothing: that is meant
        warnings.filterwarnings("ignore", message=".*no pruning will be performed.*")
        if method == "task_arithmetic":
            delta = merge_utils.task_arithmetic([tau], weights)
        else:
            delta = getattr(merge_utils, method)([tau], weights, density)
    return torch.where(delta == tau, trained, reference + delta)


@register_strategy("merge")
class Merge(Strategy):
    """Merge the stage's trained weights with the stage's start (or the run's base) at the stage end."""

    phase = "merge"
    remembers = "parameters"  # reference=base: the base's tensors; rows added later are kept as trained

    def __init__(self, method: str, weight: float, density: float, reference: str, chat_vector: dict | None):
        self.method = checked("strategy.merge.method", method, RULES["strategy.merge.method"])
        self.weight = float(checked("strategy.merge.weight", weight, RULES["strategy.merge.weight"]))
        self.density = float(checked("strategy.merge.density", density, RULES["strategy.merge.density"]))
        self.reference = checked("strategy.merge.reference", reference, RULES["strategy.merge.reference"])
        if self.method == "linear" and self.density != 1.0:
            raise UserError(f"strategy.merge.density={density}: method=linear keeps the whole task vector; "
                            f"density applies to {listing(METHODS[2:])}")
        self.chat_vector = chatvec.options(chat_vector)
        self.start: dict[str, torch.Tensor] = {}
        self.base: dict[str, torch.Tensor] = {}

    @classmethod
    def check_plan(cls, plan, me) -> None:
        if me.options.get("reference") == "base" and plan.stages and plan.stages[0].name not in me.stages:
            raise UserError(f"strategy.merge.reference=base: merge keeps the run's starting model when it sets up in "
                            f"the first stage ('{plan.stages[0].name}'), but it acts in {listing(me.stages)}; add "
                            f"'{plan.stages[0].name}' to strategy.merge.stages or use reference=start")
        opts = chatvec.options(me.options.get("chat_vector"))
        if opts:
            chatvec.check_shapes(opts, plan.config.model)

    @staticmethod
    def _copy(model) -> dict[str, torch.Tensor]:
        return {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters()}

    def setup_model(self, model, tokenizer, ctx: StageContext):
        if self.reference == "base":
            if ctx.index == 0 and not self.base:
                self.base = self._copy(model)
            if not self.base:
                raise UserError(f"stage '{ctx.name}': strategy.merge.reference=base but merge did not act in the "
                                "first stage, so it has no copy of the run's starting model")
        else:
            self.start = self._copy(model)
        return model, tokenizer

    def on_stage_end(self, ctx: StageContext) -> None:
        reference = self.base if self.reference == "base" else self.start
        ctx.notes["merge"] = self.merge_into(ctx.model, reference, ctx.seed_for("merge"))
        self.start = {}
        if self.chat_vector:
            opts = self.chat_vector
            notes = chatvec.add(ctx.model, chatvec.vector(opts), opts["weight"])
            ctx.notes["merge"]["chat_vector"] = {"instruct": opts["instruct"], "base": opts["base"], **notes}
            log.info("merge: chat vector (%s - %s) added with weight %g to %d tensors", opts["instruct"],
                     opts["base"], opts["weight"], notes["tensors"])

    def merge_into(self, model, reference: dict[str, torch.Tensor], seed: int) -> dict:
        """Merge ``model`` in place with ``reference`` (name -> tensor); returns the stage's notes."""
        kept_rows, merged, distance = {}, 0, 0.0
        devices = [p.device for p in model.parameters() if p.device.type != "cpu"]
        with torch.random.fork_rng(devices=sorted(set(devices), key=str)), torch.no_grad():
            torch.manual_seed(seed)
            for name, param in model.named_parameters():
                ref = reference.get(name)
                if ref is None:
                    continue
                if (ref.shape != param.shape) if ref.dim() == 0 else \
                        (ref.shape[1:] != param.shape[1:] or ref.shape[0] > param.shape[0]):
                    raise UserError(f"strategy.merge: parameter {name} is {tuple(param.shape)} but its reference is "
                                    f"{tuple(ref.shape)}; only rows added by a vocabulary can differ")
                rows = ref.shape[0] if ref.dim() else None
                old = param[:rows] if rows is not None else param
                ref = ref.to(device=param.device, dtype=param.dtype)
                distance += float(((old.float() - ref.float()) ** 2).sum())
                old.copy_(merge_tensor(ref, old.detach().clone(), self.method, self.weight, self.density))
                merged += 1
                if rows is not None and param.shape[0] > rows:
                    kept_rows[name] = int(param.shape[0] - rows)
        log.info("merge: %s, weight %g, density %g, with the %s (%d tensors; %d with new rows kept as trained)",
                 self.method, self.weight, self.density, self.reference, merged, len(kept_rows))
        return {"method": self.method, "weight": self.weight, "density": self.density, "reference": self.reference,
                "merged_tensors": merged, "new_rows_kept_as_trained": kept_rows,
                "task_vector_norm": round(distance ** 0.5, 6)}

    def state_dict(self) -> dict:
        return {"start": self.start, "base": self.base}

    def load_state_dict(self, state: dict) -> None:
        self.start = dict(state.get("start") or {})
        self.base = dict(state.get("base") or {})

    @classmethod
    def report_section(cls, stage: str, notes: dict) -> list[str]:
        m = notes.get("merge")
        if not m:
            return []
        kept = sum(m.get("new_rows_kept_as_trained", {}).values())
        return [f"- merge: {m['method']}, weight {m['weight']:g}, density {m['density']:g}, with the "
                f"{'stage start' if m['reference'] == 'start' else 'run base'}; {m['merged_tensors']} tensors merged, "
                f"task vector norm {m['task_vector_norm']:.4g}" + (f"; {kept} new rows kept as trained" if kept else "")
                + (f"; chat vector {cv['instruct']} − {cv['base']} added with weight {cv['weight']:g} (norm "
                   f"{cv['norm']:.4g})" if (cv := m.get("chat_vector")) else "")]
