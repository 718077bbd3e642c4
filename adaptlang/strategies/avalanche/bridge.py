"""Running avalanche-lib's continual-learning plugins inside adaptlang's training loop.

Avalanche plugins are callbacks on a ``SupervisedTemplate`` (``before_backward``,
``after_backward``, ``after_training_exp``, ...) that read the template's attributes
(``strategy.model``, ``strategy.loss``, ``strategy.clock.train_exp_counter``, ...). The
adaptlang strategies ewc/lwf/agem/si keep one Avalanche plugin each and call its callbacks
from adaptlang's hooks with a small stand-in object (``Bridge``) that carries exactly those
attributes. Where a plugin assumes classification batches (x, y, task label), the strategy
subclasses the plugin and replaces only that method with the causal-LM equivalent.

Mapping of an Avalanche *experience* to adaptlang: one stage in which the strategy acts.

Parameters are shown to the plugins through ``PlainView``: peft adapter tensors are left out
and ``.base_layer`` is removed from names, so a stage trained with lora/vocab adapters and the
next (plain, merged) stage see the same parameter names.

Sharded (``train.fsdp``; inside the loop the parameters are DTensors): a plugin's whole
per-parameter tensors stay whole (its state, checkpointed as in one process); a penalty runs
the plugin's own code on this rank's pieces (``PlainView(part="pieces")``, ``param_pieces``)
and its value is summed over the ranks (``plugin_penalty``).

avalanche-lib is imported lazily (only when such a strategy is built): it needs torchvision,
which the default install does not have (see README).
"""
from __future__ import annotations

import importlib
import sys
from types import SimpleNamespace

import torch

from ...batching import make_batch
from ...errors import UserError
from ...sharding import is_dtensor, local, piece, summed_over_ranks

ADAPTER_MARKERS = ("lora_", "ia3_l", "trainable_tokens_delta")


def avalanche(module: str, name: str):
    """``getattr(import_module(module), name)`` with a one-line error when avalanche-lib is missing.

    Several processes: avalanche's training modules create a logger when first imported, which
    it refuses on a rank other than 0 once torch.distributed is initialized. So the strategies
    import it when they are built, before accelerate starts the process group, as
    ``adaptlang.run`` does (compose, then Accelerator)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized() and module not in sys.modules:
        raise UserError("build the avalanche-backed strategies (compose) before accelerate starts the process "
                        "group: avalanche-lib cannot be imported first on a rank other than 0")
    try:
        return getattr(importlib.import_module(module), name)
    except ImportError as exc:  # ModuleNotFoundError, or torchvision/torch mismatches inside avalanche
        raise UserError(f"this strategy runs avalanche-lib's {name}, which cannot be imported here "
                        f"({type(exc).__name__}: {str(exc).splitlines()[0]}); install it with "
                        f"pip install -e \".[avalanche]\" (see README: Beyond the papers)") from None


class PlainView:
    """The model's own parameters under their plain transformers names (no peft adapters).
    Sharded, ``part`` picks: "pieces", this rank's pieces of the sharded ones (differentiable),
    or "whole", those gathered whole at the moment (FSDP's root unit between its forward and
    backward)."""

    def __init__(self, model, part: str | None = None):
        self.model, self.part = model, part

    def named_parameters(self, prefix: str = "", recurse: bool = True):
        if not recurse:  # the view is one flat "layer" (Avalanche walks modules only to skip BatchNorm)
            return
        for name, p in self.model.named_parameters():
            if any(m in name for m in ADAPTER_MARKERS) or (self.part and (self.part == "pieces") != is_dtensor(p)):
                continue
            yield prefix + name.replace(".base_layer", ""), local(p) if self.part else p

    def named_modules(self):
        yield "", self

    def parameters(self):
        return (p for _, p in self.named_parameters())

    def train(self, mode: bool = True):
        return self.model.train(mode)

    def eval(self):
        return self.model.eval()


class Bridge(SimpleNamespace):
    """The attributes of an Avalanche SupervisedTemplate that the plugins read."""

    def __init__(self, model, optimizer=None, experiences: int = 0, device=None, part: str | None = None):
        super().__init__(model=PlainView(model, part), optimizer=optimizer,
                         clock=SimpleNamespace(train_exp_counter=experiences),
                         device=device or next(model.parameters()).device, loss=None, experience=None,
                         train_mb_size=None, mb_x=None, mb_output=None, _criterion=None)


def plugin_penalty(plugin, model, experiences: int, pieces: dict | None = None) -> torch.Tensor:
    """The regularization term a penalty plugin (EWC, SI) adds to the loss now: its
    ``before_backward`` run on a zero loss.

    Sharded: ``pieces`` holds the plugin's per-parameter attributes as this rank's pieces
    (e.g. ``{"importances": ...}``, from ``param_pieces``). The term is a sum over parameter
    elements, taken in two parts: over the parameters gathered whole at the moment (FSDP's
    root unit after its forward: every rank takes the same whole term, and the reduce-scatter
    averages its equal gradients), and over this rank's pieces of the sharded ones, with
    ``pieces`` standing in for the plugin's whole tensors and the value summed over the ranks
    (``summed_over_ranks``; each rank's gradient is its pieces' share of the whole one)."""
    if pieces is None:
        return _penalty(plugin, Bridge(model, experiences=experiences))
    whole_part = _penalty(plugin, Bridge(model, experiences=experiences, part="whole"))
    whole = {key: getattr(plugin, key) for key in pieces}
    try:
        for key, value in pieces.items():
            setattr(plugin, key, value)
        pieces_part = _penalty(plugin, Bridge(model, experiences=experiences, part="pieces"))
    finally:
        for key, value in whole.items():
            setattr(plugin, key, value)
    return whole_part + summed_over_ranks(pieces_part)


def _penalty(plugin, bridge: Bridge) -> torch.Tensor:
    bridge.loss = torch.zeros((), device=bridge.device)
    plugin.before_backward(bridge)
    return bridge.loss


def param_pieces(params: dict, model) -> dict:
    """``{name: ParamData}`` of this rank's pieces of a plugin's whole tensors ``params`` (of a
    parameter's shape, or flattened), for the same-named sharded parameters of ``model``. A
    tensor of a parameter that grew since (vocab) is first expanded with zeros, as the plugin's
    own penalty does (``ParamData.expand``)."""
    ParamData = avalanche("avalanche.training.utils", "ParamData")
    sharded = dict((name, p) for name, p in PlainView(model).named_parameters() if is_dtensor(p))
    out = {}
    for name, data in params.items():
        param = sharded.get(name)
        if param is None:  # not sharded now (or not a parameter): the pieces' part skips it
            continue
        if len(data.shape) == param.dim():
            data.expand(param.shape)
        part = piece(data.data, param)
        out[name] = ParamData(name, init_tensor=part, device=part.device)
    return out


def params_state(params: dict) -> dict:
    """Avalanche ``{name: ParamData}`` -> ``{name: tensor}`` (a strategy's state_dict, saved as safetensors)."""
    return {name: p.data for name, p in params.items()}


def params_from_state(state: dict, device=None) -> dict:
    """The inverse of ``params_state``: ``{name: ParamData}`` holding the saved tensors (bit for bit)."""
    ParamData = avalanche("avalanche.training.utils", "ParamData")
    return {name: ParamData(name, init_tensor=t.clone().to(device or t.device), device=device or t.device)
            for name, t in state.items()}


def place(params: dict, device) -> None:
    """Move ParamData tensors to the model's device (state is loaded on the CPU)."""
    device = torch.device(device)
    for p in params.values():
        if p.data.device != device:
            p.data, p.device = p.data.to(device), device


def draw_batches(stream, tokenizer, batch_size: int, n: int, device) -> list[dict]:
    """``n`` padded batches of the stage's examples (for importance estimates, references)."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    batches = []
    for _ in range(n):
        batch = make_batch([next(stream) for _ in range(batch_size)], pad, None)
        batch.pop("num_tokens", None)
        batches.append({k: v.to(device) for k, v in batch.items()})
    return batches


def lm_gradients(model, batch: dict, params: list) -> list:
    """Gradients of the LM loss on ``batch`` for ``params`` (torch.autograd.grad: nothing is
    accumulated into ``.grad``, so a DDP wrapper's hooks do not fire)."""
    loss = model(**batch).loss
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]
