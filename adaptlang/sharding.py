"""Sharded training (``train.fsdp=true``): PyTorch's FSDP2 (``fully_shard``) through accelerate.

accelerate is the one distributed engine: the run's ``Accelerator`` gets an FSDP2 plugin
(``fsdp_plugin``), and ``accelerator.prepare`` shards the model (each decoder layer, then
the root), moves the optimizer onto the sharded DTensor parameters, and reduce-scatters the
gradients. On GPUs accelerate turns FSDP on by itself. On CPU processes (gloo) accelerate
1.16 leaves FSDP off (its state sets it for GPU-like devices only) although torch's FSDP2
runs there: ``fsdp_accelerator`` turns it on the same way, so the CPU tests run accelerate's
own GPU code path.

What the sharding covers and what it does not:

* When a stage's training starts, after its strategies have set the model up (vocab's
  growth, lora's adapters), a copy of the model's module tree sharing its parameters
  (``sharding_copy``) is sharded by ``build_optimizer``, and the model's own parameters are
  released; when the training ends, they are gathered back whole into the model's own
  parameter objects on every rank (``unshard``): strategies' stage ends (lora's and vocab's
  merges, LwF's teacher), the evaluations and the saved stage model see the plain
  transformers model they set up, as in one process.
* Inside the loop, a strategy that reads or writes parameters sees sharded DTensors:
  ``local`` gives this rank's piece of a parameter and ``local_like`` (``piece``) the same
  piece of a whole tensor of the parameter's shape (af's reset draws the whole matrix, as one
  process does, and keeps this rank's rows). EWC and SI keep their per-parameter tensors
  whole (as one process does; that is what checkpoints hold) and compute their penalties on
  this rank's pieces, the value summed over the ranks (``summed_over_ranks``); SI's path
  integral is formed per piece and gathered whole every step; A-GEM all-reduces its dot
  products (adaptlang.strategies.avalanche).
* Mid-stage checkpoints gather the whole model and optimizer state (``full_states``) and
  rank 0 writes them as in one process; a resume hands every rank its shard back.
"""
from __future__ import annotations

import copy
import logging

import torch

log = logging.getLogger("adaptlang")


def fsdp_plugin():
    """accelerate's FSDP2 plugin as adaptlang uses it: every decoder layer its own unit
    (``transformer_layer_cls_to_wrap`` from the model's ``_no_split_modules``), parameters
    resharded after the forward, whole state dicts for saving."""
    from accelerate.utils import FullyShardedDataParallelPlugin

    return FullyShardedDataParallelPlugin(fsdp_version=2, auto_wrap_policy="transformer_based_wrap",
                                          reshard_after_forward=True, state_dict_type="FULL_STATE_DICT")


def fsdp_accelerator(accelerator, plugin) -> None:
    """Turn accelerate's FSDP on for several CPU processes (it does so itself on GPUs)."""
    from accelerate.utils import DistributedType

    if accelerator.distributed_type == DistributedType.MULTI_CPU:
        from accelerate.state import PartialState

        # both shared states: accelerate re-reads the process state's into its own on every AcceleratorState()
        PartialState().distributed_type = accelerator.state.distributed_type = DistributedType.FSDP
        accelerator.state.fsdp_plugin = plugin
    if accelerator.distributed_type != DistributedType.FSDP:
        log.info("train.fsdp: one process (%s), nothing to shard", accelerator.distributed_type)


def sharded(accelerator) -> bool:
    return bool(getattr(accelerator, "is_fsdp2", False))


def is_dtensor(t) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(t, DTensor)


def local(t: torch.Tensor) -> torch.Tensor:
    """This rank's piece of a (possibly sharded) tensor; differentiable."""
    return t.to_local() if is_dtensor(t) else t


def local_like(whole: torch.Tensor, param) -> torch.Tensor:
    """The piece of ``whole`` (a plain tensor of ``param``'s full shape) that this rank holds of
    ``param``; ``whole`` itself when ``param`` is not sharded."""
    if not is_dtensor(param):
        return whole
    from torch.distributed.tensor import distribute_tensor

    return distribute_tensor(whole.to(param.device), param.device_mesh, param.placements, src_data_rank=None).to_local()


def holds_shards(model) -> bool:
    """``model`` is the sharded copy being trained: its parameters are DTensors, but for those
    of a unit gathered whole at the moment (the root's, between its forward and backward)."""
    return any(is_dtensor(p) for p in model.parameters())


def piece(whole: torch.Tensor, param) -> torch.Tensor:
    """This rank's piece of ``whole``, a tensor of ``param``'s full shape or that tensor
    flattened (returned flattened then too)."""
    part = local_like(whole.reshape(param.shape), param)
    return part.reshape(-1) if whole.dim() == 1 else part


def summed_over_ranks(partial: torch.Tensor) -> torch.Tensor:
    """``partial``, this rank's part of a sum over the parameters' pieces, given the whole
    sum's value on every rank (all-reduced) while its gradient stays that of this rank's
    part: exactly the whole sum's gradient for this rank's pieces, which FSDP leaves
    unaveraged (they reach the sharded parameters directly, not through the reduce-scatter)."""
    total = partial.detach().clone()
    torch.distributed.all_reduce(total)
    return partial + (total - partial.detach())


def plain_copy(module, **parameters):
    """A shallow copy of ``module`` as its own class (not FSDP's subclass of it), with
    ``parameters`` in place of its own: an initializer can run on it as on the original."""
    from torch.distributed.fsdp import FSDPModule

    cls = next(c for c in type(module).__mro__ if not issubclass(c, FSDPModule))
    proxy = cls.__new__(cls)
    proxy.__dict__.update(module.__dict__)
    proxy._parameters = {**module._parameters, **parameters}
    return proxy


def sharding_copy(model):
    """A copy of ``model``'s module tree holding the very same parameters and buffers: FSDP shards
    the copy (replacing its parameters by DTensors), while ``model`` -- the object strategies
    hold references into (lora's tuner, vocab's token adapters) -- stays a plain module."""
    memo = {id(t): t for t in (*model.parameters(), *model.buffers())}
    return copy.deepcopy(model, memo)


def release(model) -> None:
    """Free ``model``'s parameter memory while its sharded copy trains (identities kept)."""
    for p in model.parameters():
        p.data = torch.empty(0, dtype=p.dtype, device=p.device)


def unshard(sharded_model, model):
    """Gather ``sharded_model``'s parameters (an all-gather per tensor) into ``model``'s own
    parameter objects (released before training), on every rank; returns ``model``."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    full = get_model_state_dict(sharded_model, options=StateDictOptions(full_state_dict=True))
    for name, p in model.named_parameters():
        p.data = full[name].to(p.device)
    return model


class FullModelState:
    """Stands for a sharded model in ``Checkpointer.save``/``load`` (safetensors' ``save_model``/
    ``load_model``): the whole state dict, gathered beforehand on every rank; loading hands every
    rank its shard."""

    def __init__(self, model, full: dict | None = None):
        self.model, self.full = model, full

    def state_dict(self):
        return self.full

    def parameters(self):
        """The gathered tensors (checkpoint.checkpoint_bytes sizes a checkpoint from them on a full disk)."""
        return iter((self.full or {}).values())

    def load_state_dict(self, state: dict, strict: bool = True):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        return set_model_state_dict(self.model, state, options=StateDictOptions(full_state_dict=True, strict=strict))


class FullOptimizerState:
    """Stands for the optimizer over sharded parameters in ``Checkpointer.save``/``load``: its
    whole state dict (keyed by parameter names), gathered beforehand on every rank."""

    def __init__(self, model, optimizer, full: dict | None = None):
        self.model, self.optimizer, self.full = model, optimizer, full

    def state_dict(self):
        return self.full

    def load_state_dict(self, state: dict):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        set_optimizer_state_dict(self.model, self.optimizer, state, options=StateDictOptions(full_state_dict=True))


def full_states(model, optimizer) -> tuple[FullModelState, FullOptimizerState]:
    """Gather the whole model and optimizer state on every rank (collective: every rank calls it)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    model_sd, optim_sd = get_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True))
    return FullModelState(model, owning_storage(model_sd)), FullOptimizerState(model, optimizer, optim_sd)


def owning_storage(state: dict) -> dict:
    """The state with every tensor owning its whole storage. A tensor sharded unevenly (a vocabulary
    of 2,001 rows over 2 ranks) is gathered as a view of a padded buffer, which safetensors refuses
    to save ("None is covering the entire storage"). Tensors that shared one view (tied embeddings)
    share one copy."""
    copies: dict[tuple, torch.Tensor] = {}
    owned = {}
    for name, tensor in state.items():
        if not isinstance(tensor, torch.Tensor) or tensor.untyped_storage().nbytes() == tensor.numel() * tensor.element_size():
            owned[name] = tensor
            continue
        key = (tensor.data_ptr(), tuple(tensor.shape), tuple(tensor.stride()))
        if key not in copies:
            copies[key] = tensor.clone()
        owned[name] = copies[key]
    return owned
