"""The chat vector (Huang et al. 2023, arXiv 2310.04799): instruction following carried over to
a continually-pretrained model by arithmetic on weights.

    chat vector  = instruct - base          (a chat model minus the base it was tuned from)
    stage model += weight * chat vector     (the base continually pretrained in this run)

The paper adds the chat vector with weight 1 (and reports 0.5 as a milder variant). Rows that
``vocab`` added during the run have no counterpart in either model and get no delta; every
other tensor must have exactly the chat vector's shape. Shapes are compared on the meta device
when the plan is made (nothing is loaded), and the two models are read at the stage end.
"""
from __future__ import annotations

import torch

from ...config import is_trained_checkpoint
from ...errors import UserError

DEFAULTS = {"instruct": None, "base": None, "weight": 1.0}
KEY = "strategy.merge.chat_vector"


def options(value) -> dict | None:
    """The chat-vector options (``None`` when no instruct model is given), checked."""
    from ...config_rules import checked, _num, Rule

    value = {} if value is None else dict(value)
    unknown = sorted(set(value) - set(DEFAULTS))
    if unknown:
        raise UserError(f"{KEY}.{unknown[0]}: unknown option; valid: instruct, base, weight")
    opts = {**DEFAULTS, **value}
    if opts["instruct"] is None and opts["base"] is None:
        return None
    for key in ("instruct", "base"):
        if opts[key] is None:
            other = "base" if key == "instruct" else "instruct"
            raise UserError(f"{KEY}.{key}: needs a model (path or name) when {KEY}.{other} is given: the chat "
                            f"vector is instruct - base")
        opts[key] = checked(f"{KEY}.{key}", opts[key], Rule("text"))
    opts["weight"] = float(checked(f"{KEY}.weight", opts["weight"], _num(0)))
    return opts


def _loadable(name_or_path: str) -> str:
    from ...models import check_model_path
    from ...named_models import resolve

    check_model_path(name_or_path)
    return resolve(name_or_path)


def meta_shapes(config) -> dict[str, tuple]:
    """Parameter name -> shape of a model of ``config``, built on the meta device."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return {n: tuple(p.shape) for n, p in model.named_parameters()}


def checkpoint_shapes(name_or_path: str, where: str) -> dict[str, tuple]:
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(_loadable(name_or_path))
    except (OSError, ValueError) as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise UserError(f"{where}='{name_or_path}': cannot read its config ({first})") from None
    return meta_shapes(config)


def run_model_shapes(model_cfg, rows: int) -> tuple[dict[str, tuple], bool]:
    """Shapes of the run's starting model, and whether its vocabulary rows are known (a model
    built from config gets its rows from a tokenizer trained during the run: ``rows`` stands in)."""
    if is_trained_checkpoint(model_cfg):
        return checkpoint_shapes(str(model_cfg.name_or_path), "model.name_or_path"), True
    from transformers import MistralConfig

    from ...models import ARCH_KEYS

    kwargs = {k: model_cfg[k] for k in ARCH_KEYS if model_cfg.get(k) is not None}
    return meta_shapes(MistralConfig(vocab_size=rows, **kwargs)), False


def check_shapes(opts: dict, model_cfg) -> None:
    """Refuse, in one line before training, a chat vector that cannot be added to the run's model."""
    instruct = checkpoint_shapes(opts["instruct"], f"{KEY}.instruct")
    base = checkpoint_shapes(opts["base"], f"{KEY}.base")
    for name in sorted(set(instruct) | set(base)):
        if instruct.get(name) != base.get(name):
            raise UserError(f"{KEY}: instruct and base differ at parameter {name} ({instruct.get(name)} vs "
                            f"{base.get(name)}); the chat vector needs two models of one architecture")
    rows = _vocab_rows(base)
    run, rows_known = run_model_shapes(model_cfg, rows)
    for name in sorted(set(run) | set(base)):
        have, want = run.get(name), base.get(name)
        vocab_rows = want is not None and have is not None and len(want) == len(have) == 2 and want[0] == rows
        if not (have == want or vocab_rows and have[1] == want[1] and (have[0] >= want[0] or not rows_known)):
            raise UserError(f"{KEY}: the run's model has parameter {name} of shape {have} but the chat vector's is "
                            f"{want}; the chat vector needs the architecture of the run's model "
                            f"(only rows added by a vocabulary may differ)")


def _vocab_rows(shapes: dict[str, tuple]) -> int:
    emb = next((s for n, s in shapes.items() if n.endswith("embed_tokens.weight")), None)
    return emb[0] if emb else 1


def vector(opts: dict) -> dict[str, torch.Tensor]:
    """name -> instruct - base (float32, on the CPU), one model in memory at a time beside the result."""
    from transformers import AutoModelForCausalLM

    def weights(key):
        model = AutoModelForCausalLM.from_pretrained(_loadable(opts[key]), dtype=torch.float32)
        return {n: p.detach() for n, p in model.named_parameters()}

    delta = weights("instruct")
    for name, p in weights("base").items():
        if name not in delta or delta[name].shape != p.shape:
            raise UserError(f"{KEY}: instruct and base differ at parameter {name}; the chat vector needs two "
                            "models of one architecture")
        delta[name] = delta[name] - p
    return delta


@torch.no_grad()
def add(model, delta: dict[str, torch.Tensor], weight: float) -> dict:
    """``model``'s parameters += weight * delta on the delta's rows (rows beyond them, added by a
    vocabulary, are left as they are); returns the notes."""
    added, norm = 0, 0.0
    params = dict(model.named_parameters())
    missing = sorted(set(delta) ^ set(params))
    if missing:
        raise UserError(f"{KEY}: parameter {missing[0]} is in only one of the run's model and the chat vector")
    for name, param in params.items():
        d = delta[name]
        if param.shape != d.shape and (d.dim() != 2 or param.shape[1] != d.shape[1] or param.shape[0] < d.shape[0]):
            raise UserError(f"{KEY}: parameter {name} is {tuple(param.shape)} but the chat vector's is "
                            f"{tuple(d.shape)}; only rows added by a vocabulary can differ")
        old = param[:d.shape[0]] if d.dim() == 2 else param
        old.add_(d.to(device=param.device, dtype=param.dtype), alpha=weight)
        norm += float((d.float() ** 2).sum())
        added += 1
    return {"weight": weight, "tensors": added, "norm": round(norm ** 0.5, 6)}
