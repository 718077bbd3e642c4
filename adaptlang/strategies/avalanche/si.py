"""Synaptic intelligence (``si``) with avalanche-lib's ``SynapticIntelligencePlugin``.

Zenke et al. (2017): along the training trajectory every parameter accumulates its
contribution to the loss change, sum over steps of g * delta-theta; at the end of a stage
(an Avalanche *experience*) this path integral, divided by (total displacement^2 + eps),
becomes the parameter's importance, and later stages add
``si_lambda / 2 * sum_i importance_i (theta_i - theta*_i)^2`` to the loss.

Avalanche's static methods do the work (create_syn_data, init_batch, pre_update,
compute_ewc_loss, update_ewc_data). Mapping to adaptlang's hooks: ``setup_data`` (after every strategy's ``setup_model``) =
``before_training_exp``; the penalty in ``extra_loss`` = ``before_backward``; Avalanche's
``before_training_iteration`` (remember theta) and the gradient half of
``after_training_iteration`` run in ``on_gradients`` (after the step's backward passes, when
the gradient exists; our loop clears it at the step), and the trajectory update in
``on_step_end``; ``after_training_exp`` at the end of the stage. No classification
assumption is involved. Parameters: the model's own trainable ones (PlainView). Anchors,
importances and the running path integral are part of the state (tensors, in
safetensors), so a killed run resumes bit for bit.

Avalanche's ``extract_weights``/``extract_grad`` store ``param.detach().cpu().flatten()``,
which on a CPU model is a *view* of the live parameter (``.cpu()`` does not copy there): the
saved anchor and the pre-step weights then follow the parameters and SI's penalty and path
integral are always zero on CPU (on GPU ``.cpu()`` copies). We copy the stored tensors right
after those calls (``_own``), which changes nothing where Avalanche already copied.

Sharded (``train.fsdp``): the anchors, importances and path integral stay whole on every rank
(the checkpointed state; the stage's start and end see the whole model, as in one process).
The penalty is Avalanche's on this rank's pieces, summed over the ranks
(``bridge.plugin_penalty``); each step's path-integral increment g * delta-theta is formed on
the sharded gradients and parameters (DTensors, elementwise as in one process) and gathered
whole into the trajectory (one all-gather of a parameter-sized vector a step).
"""
from __future__ import annotations

import torch

from .bridge import Bridge, avalanche, param_pieces, params_from_state, params_state, place, plugin_penalty
from ...errors import UserError
from ...sharding import holds_shards
from ...strategy import StageContext, Strategy, TrainState, register_strategy


def _own(params: dict) -> None:
    for value in params.values():
        value.data = value.data.clone()


@register_strategy("si")
class SynapticIntelligence(Strategy):
    """Penalize moving parameters whose past movement reduced the loss most."""
    phase = "memory"
    remembers = "parameters"  # anchors and importances; parameters that grew are expanded by Avalanche

    def __init__(self, si_lambda: float, eps: float):
        if float(si_lambda) < 0:
            raise UserError(f"strategy.si.si_lambda={si_lambda}: must be >= 0")
        self.SI = avalanche("avalanche.training.plugins", "SynapticIntelligencePlugin")
        self.plugin = self.SI(si_lambda=float(si_lambda), eps=float(eps))
        self.stages_done = 0
        self.pieces = None  # sharded: this rank's pieces of the anchors and importances, cut once a stage
        self.before_step: dict = {}  # sharded: each parameter (DTensor) and its gradient before the step

    def setup_data(self, stream, ctx: StageContext):
        """Avalanche's before_training_exp, once every strategy has set the model up (a vocabulary
        that grew in this stage is already resized, so the anchors take the new shapes)."""
        model = ctx.model
        device = next(model.parameters()).device
        for params in [*self.plugin.ewc_data, *self.plugin.syn_data.values()]:
            place(params, device)
        self.plugin.before_training_exp(Bridge(model, experiences=self.stages_done))
        _own(self.plugin.ewc_data[0])  # the stage's starting weights (init_batch)
        self.pieces = None
        return stream

    def penalty(self, model) -> torch.Tensor:
        """lambda * the SI penalty of ``model`` now (Avalanche's before_backward)."""
        if not holds_shards(model):
            return plugin_penalty(self.plugin, model, self.stages_done)
        if self.pieces is None:
            self.pieces = {"ewc_data": tuple(param_pieces(data, model) for data in self.plugin.ewc_data)}
        return plugin_penalty(self.plugin, model, self.stages_done, self.pieces)

    def extra_loss(self, batch, outputs, state: TrainState):
        return self.penalty(state.model) if self.stages_done else None

    def on_gradients(self, state: TrainState) -> None:
        view = Bridge(state.model).model
        if holds_shards(state.model):
            self.before_step = {name: (p.detach().clone(), p.grad.detach().clone())
                                for name, p in self.SI.allowed_parameters(view, self.plugin.excluded_parameters)}
            return
        self.SI.pre_update(view, self.plugin.syn_data, self.plugin.excluded_parameters)
        self.SI.extract_grad(view, self.plugin.syn_data["grad"], self.plugin.excluded_parameters)
        _own(self.plugin.syn_data["old_theta"])
        _own(self.plugin.syn_data["grad"])

    @torch.no_grad()
    def on_step_end(self, state: TrainState) -> None:
        syn = self.plugin.syn_data
        if self.before_step:
            params = dict(self.SI.allowed_parameters(Bridge(state.model).model, self.plugin.excluded_parameters))
            for name, (old_theta, grad) in self.before_step.items():
                syn["trajectory"][name].data += (grad * (params[name].detach() - old_theta)).full_tensor().reshape(-1)
            self.before_step = {}
            return
        self.SI.extract_weights(Bridge(state.model).model, syn["new_theta"], self.plugin.excluded_parameters)
        for name in syn["trajectory"]:  # the rest of Avalanche's post_update
            syn["trajectory"][name].data += syn["grad"][name].data * (syn["new_theta"][name].data
                                                                     - syn["old_theta"][name].data)

    def on_stage_end(self, ctx: StageContext) -> None:
        self.plugin.after_training_exp(Bridge(ctx.model, experiences=self.stages_done))
        self.stages_done += 1

    def state_dict(self) -> dict:
        return {"stages_done": self.stages_done,
                "ewc_data": [params_state(d) for d in self.plugin.ewc_data],
                "syn_data": {k: params_state(d) for k, d in self.plugin.syn_data.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.stages_done, self.pieces = int(state["stages_done"]), None
        if "ewc_data" in state:
            self.plugin.ewc_data = tuple(params_from_state(d) for d in state["ewc_data"])
            self.plugin.syn_data = {k: params_from_state(d) for k, d in state["syn_data"].items()}
