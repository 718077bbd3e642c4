"""Elastic weight consolidation (``ewc``) with avalanche-lib's ``EWCPlugin``.

Kirkpatrick et al. (2017); Instruct-Align section 7 names EWC as a next method to try. After
every stage in which it acts (an Avalanche *experience*), the diagonal Fisher information of
the LM loss is estimated on ``fisher_batches`` batches of that stage's training examples and
the parameters are saved; in later stages ``ewc_lambda * sum_i F_i (theta_i - theta*_i)^2`` is
added to the loss (Avalanche's ``before_backward``; ``mode: separate`` keeps one penalty per
past stage, ``online`` one decayed penalty). Before the first stage end the penalty is zero.

Adaptation to a causal LM (subclass): ``compute_importances`` replaces Avalanche's
classification DataLoader (x, y, task label) with LM batches and takes the squared gradient
of the next-token loss per batch (the empirical Fisher, as Avalanche does), via
torch.autograd.grad. Parameters are the model's own (peft adapter tensors excluded; see
``bridge.py`` here); rows added later by ``vocab`` are not penalized (Avalanche:
"new parameters do not count"). Default stages: all three, so that the pretraining stage
provides the first importances. Importances and anchors are part of the state (tensors, in
safetensors), so a killed run resumes bit for bit.

Sharded (``train.fsdp``): importances are estimated at the stage end, when the model is whole
again on every rank, on the same batches on every rank (the stream is identical there), so
they are one process's; they and the anchors stay whole (the checkpointed state), and the
penalty is Avalanche's, run on this rank's pieces of them and of the parameters and summed
over the ranks (``bridge.plugin_penalty``; the pieces are cut once a stage).
"""
from __future__ import annotations

import torch

from collections import defaultdict

from .bridge import (Bridge, PlainView, avalanche, draw_batches, lm_gradients, param_pieces, params_from_state,
                     params_state, place, plugin_penalty)
from ...errors import UserError
from ...sharding import holds_shards
from ...strategy import StageContext, Strategy, TrainState, register_strategy


def lm_ewc_plugin(ewc_lambda: float, mode: str, decay_factor):
    EWCPlugin = avalanche("avalanche.training.plugins", "EWCPlugin")
    ParamData = avalanche("avalanche.training.utils", "ParamData")

    class LMEWCPlugin(EWCPlugin):
        def compute_importances(self, model, criterion, optimizer, dataset, device, batch_size, num_workers=0):
            """Empirical Fisher of the LM loss; ``model`` is a PlainView, ``dataset`` a list of batches."""
            named = list(model.named_parameters())
            importances = {n: ParamData(n, p.shape, device=p.device) for n, p in named}
            flags = [p.requires_grad for _, p in named]
            was_training = model.model.training
            model.eval()
            try:
                for _, p in named:
                    p.requires_grad_(True)
                for batch in dataset:
                    for (n, _), g in zip(named, lm_gradients(model.model, batch, [p for _, p in named])):
                        importances[n].data += g.detach().pow(2)
            finally:
                for (_, p), flag in zip(named, flags):
                    p.requires_grad_(flag)
                model.train(was_training)
            for imp in importances.values():
                imp.data /= float(len(dataset))
            return importances

    return LMEWCPlugin(ewc_lambda, mode=mode, decay_factor=decay_factor)


@register_strategy("ewc")
class EWC(Strategy):
    """Penalize moving parameters that were important (Fisher) for earlier stages."""
    phase = "memory"  # estimates importances on the stage's final data stream
    remembers = "parameters"  # anchors and importances; rows added later are not penalized

    def __init__(self, ewc_lambda: float, mode: str, decay_factor, fisher_batches: int):
        if mode not in ("separate", "online"):
            raise UserError(f"strategy.ewc.mode={mode!r}: valid: separate, online")
        if mode == "online" and decay_factor is None:
            raise UserError("strategy.ewc.decay_factor: needed with mode=online (e.g. 0.9)")
        if int(fisher_batches) < 1:
            raise UserError(f"strategy.ewc.fisher_batches={fisher_batches}: must be >= 1")
        self.plugin = lm_ewc_plugin(float(ewc_lambda), mode, decay_factor)
        self.fisher_batches = int(fisher_batches)
        self.stages_done = 0
        self.stream = None
        self.batch_size = 8
        self.pieces = None  # sharded: this rank's pieces of the anchors and importances, cut once a stage

    def setup_data(self, stream, ctx: StageContext):
        self.stream, self.batch_size, self.pieces = stream, int(ctx.train.batch_size), None
        device = next(ctx.model.parameters()).device
        for params in [*self.plugin.saved_params.values(), *self.plugin.importances.values()]:
            place(params, device)
        return stream

    def penalty(self, model) -> torch.Tensor:
        """lambda * the EWC penalty of ``model`` now (Avalanche's before_backward)."""
        if not holds_shards(model):
            return plugin_penalty(self.plugin, model, self.stages_done)
        if self.pieces is None:
            self.pieces = {key: defaultdict(dict, {k: param_pieces(v, model) for k, v in getattr(self.plugin, key).items()})
                           for key in ("saved_params", "importances")}
        return plugin_penalty(self.plugin, model, self.stages_done, self.pieces)

    def extra_loss(self, batch, outputs, state: TrainState):
        return self.penalty(state.model) if self.stages_done else None

    def on_stage_end(self, ctx: StageContext) -> None:
        bridge = Bridge(ctx.model, experiences=self.stages_done)
        bridge.experience = type("Experience", (), {})()
        bridge.experience.dataset = draw_batches(self.stream, ctx.tokenizer, self.batch_size, self.fisher_batches,
                                                 bridge.device)
        self.plugin.after_training_exp(bridge)
        self.stages_done += 1
        ctx.notes["ewc_stages_consolidated"] = self.stages_done
        self.stream = self.pieces = None

    def state_dict(self) -> dict:
        return {"stages_done": self.stages_done,
                "saved_params": {str(k): params_state(v) for k, v in self.plugin.saved_params.items()},
                "importances": {str(k): params_state(v) for k, v in self.plugin.importances.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.stages_done, self.pieces = int(state["stages_done"]), None
        self.plugin.saved_params = defaultdict(dict, {int(k): params_from_state(v)
                                                      for k, v in state.get("saved_params", {}).items()})
        self.plugin.importances = defaultdict(dict, {int(k): params_from_state(v)
                                                     for k, v in state.get("importances", {}).items()})


__all__ = ["EWC", "PlainView"]
