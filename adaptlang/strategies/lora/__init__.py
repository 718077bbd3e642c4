"""PEFT adapters on the Transformer body (``lora``): LoRA or (IA)3, via peft.

Beyond the two papers: BLOOM+1 (Yong et al. 2023, "BLOOM+1: Adding Language Support to
BLOOM for Zero-Shot Prompting") compares language-adaptation recipes that train adapters
instead of the whole model -- LoRA (Hu et al. 2022: W + (alpha/r) B A, B initialized to
zero) and (IA)3 (Liu et al. 2022: learned vectors rescaling keys, values and the
feed-forward activations, initialized to one) -- with and without a new vocabulary.

In its stages (default ``adapt``) the strategy injects the adapters in place (peft tuner
classes on the transformers model, no PeftModel wrapper) and freezes the base weights:

* alone: only the adapters train; embeddings, LM head and body are frozen bit for bit;
* after ``vocab`` (``strategy=vocab+lora``): vocab has already chosen what trains (its new
  embedding rows via TrainableTokens, the LM head); lora keeps that choice and adds the
  body adapters, so the recipe is "new rows + head + adapters, body frozen". Rule: when
  some earlier strategy of the stage froze a parameter, the parameters it left trainable
  stay trainable, except the weights the adapters wrap, which stay frozen as LoRA and (IA)3
  define them (so ``vocab body: full`` + lora trains the new rows, the adapters and the body's
  norms); when nothing was frozen, everything but the adapters is frozen.
  ``vocab``'s own ``body: lora`` option injects LoRA itself; using it together with this
  strategy in one stage would wrap the same layers twice: both then claim ``body.adapters``
  and the plan refuses the combination before anything runs (use one).

At the end of the stage the adapters are merged into the base weights and removed
(``merge_and_unload``), so the saved model is a plain transformers model (the same class,
the same state-dict keys); the stage runner restores every parameter's ``requires_grad``.
Teardown runs in reverse set-up order (adaptlang.stage_runner), so with ``vocab+lora`` the
LoRA layers are merged before vocab merges its token rows, and both before the strategies
that remember the model (lwf, ewc, si, agem: set up before it) take their copy.

Targets: ``targets: auto`` is ``all-linear`` for LoRA (every linear layer of the body, not
the LM head) and peft's per-architecture default for (IA)3 (Mistral/Llama: k_proj, v_proj,
down_proj, with down_proj rescaled on its input as a feed-forward module; for an architecture
peft has no default for, e.g. Phi-3's fused qkv_proj, the key/value and feed-forward output
projections found by name); a list of module names overrides it. Dropout defaults to 0 so that training stays deterministic.
"""
from __future__ import annotations

import logging
import warnings

import torch

from ...errors import UserError, listing
from ...strategy import StageContext, Strategy, register_strategy

log = logging.getLogger("adaptlang")
METHODS = ("lora", "ia3")
ADAPTER = "adaptlang_adapter"


# (IA)3 rescales keys and values and the feed-forward's input to its output projection (Liu et al.
# 2022, section 3.3); module names by family, for architectures peft has no default for.
KEY_VALUE = ("k_proj", "v_proj", "qkv_proj", "query_key_value", "c_attn", "Wqkv")
FEED_FORWARD_OUT = ("down_proj", "dense_4h_to_h", "fc2", "w2")


def ia3_fallback_targets(model) -> list[str]:
    present = {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    targets = [n for n in KEY_VALUE + FEED_FORWARD_OUT if n in present]
    if not any(t in FEED_FORWARD_OUT for t in targets):
        raise UserError(f"strategy.lora: no (IA)3 targets known for {type(model).__name__}; set "
                        f"strategy.lora.targets=[...] (its linear layers: {', '.join(sorted(present))})")
    return targets


def _body_adapters(model) -> list[str]:
    """Modules already wrapped by a LoRA or (IA)3 layer (token adapters do not count)."""
    from peft.tuners.ia3 import IA3Layer
    from peft.tuners.lora import LoraLayer

    return [n for n, m in model.named_modules() if isinstance(m, (LoraLayer, IA3Layer))]


def _wrapped_weights(model) -> set[int]:
    """ids of the weights and biases that LoRA / (IA)3 layers wrap (their ``base_layer``)."""
    from peft.tuners.ia3 import IA3Layer
    from peft.tuners.lora import LoraLayer

    return {id(p) for m in model.modules() if isinstance(m, (LoraLayer, IA3Layer))
            for p in m.get_base_layer().parameters(recurse=False)}


@register_strategy("lora")
class Adapters(Strategy):
    """Train LoRA or (IA)3 adapters on the body; merge them back at the end of the stage."""

    owns = frozenset({"body.adapters"})
    # wraps the model after vocab's token adapters (keeps what vocab made trainable), and after the
    # strategies that remember the model, so that it merges before they copy it at the stage end
    phase = "model"

    def __init__(self, method: str, r: int, alpha: int, dropout: float, targets):
        if method not in METHODS:
            raise UserError(f"strategy.lora.method={method!r}: valid: {listing(METHODS)}")
        if int(r) < 1:
            raise UserError(f"strategy.lora.r={r}: must be a positive rank")
        if not 0.0 <= float(dropout) < 1.0:
            raise UserError(f"strategy.lora.dropout={dropout}: must be in [0, 1)")
        if targets != "auto" and not (isinstance(targets, (list, tuple)) and targets
                                      and all(isinstance(t, str) for t in targets)):
            raise UserError(f"strategy.lora.targets={targets!r}: 'auto' or a list of module names, e.g. [q_proj, v_proj]")
        self.method, self.r, self.alpha, self.dropout = method, int(r), int(alpha), float(dropout)
        self.targets = targets if targets == "auto" else list(targets)
        self.tuner = None

    def _config(self, model):
        from peft import IA3Config, LoraConfig
        from peft.utils import TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING as IA3_DEFAULTS

        if self.method == "lora":
            return LoraConfig(r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout,
                              target_modules="all-linear" if self.targets == "auto" else self.targets)
        targets = self.targets
        if targets == "auto":
            if getattr(model.config, "model_type", None) in IA3_DEFAULTS:
                return IA3Config()  # peft fills target/feed-forward modules from the model type
            targets = ia3_fallback_targets(model)  # e.g. Phi-3's fused projections, unknown to peft
        return IA3Config(target_modules=targets, feedforward_modules=[t for t in targets if t in FEED_FORWARD_OUT])

    def setup_model(self, model, tokenizer, ctx: StageContext):
        from peft import IA3Model, LoraModel

        if _body_adapters(model):
            raise UserError(f"stage '{ctx.name}': the model already carries adapters; lora would wrap them again")
        params = list(model.parameters())
        chosen = {id(p) for p in params if p.requires_grad}
        keep = chosen if len(chosen) < len(params) else set()  # an earlier strategy chose a subset: keep it
        tuner_cls = LoraModel if self.method == "lora" else IA3Model
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*Already found a `peft_config`.*")
                warnings.filterwarnings("ignore", message=".*tie_word_embeddings=True.*")
                self.tuner = tuner_cls(model, self._config(model), ADAPTER)
        except ValueError as exc:  # e.g. target modules not found in this architecture
            raise UserError(f"strategy.lora: {str(exc).splitlines()[0]}") from None
        marker = "lora_" if self.method == "lora" else "ia3_l"
        wrapped = _wrapped_weights(model)  # the adapters' base weights stay frozen, whatever was kept
        trainable = 0
        for name, p in model.named_parameters():
            p.requires_grad = marker in name or (id(p) in keep and id(p) not in wrapped)
            trainable += p.numel() if marker in name else 0
        ctx.notes["adapters"] = {"method": self.method, "adapter_parameters": trainable,
                                 "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
                                 "kept_from_earlier_strategies": len(keep)}
        log.info("lora: %s adapters, %d adapter parameters", self.method, trainable)
        return model, tokenizer

    def on_stage_end(self, ctx: StageContext) -> None:
        if self.tuner is not None:
            self.tuner.merge_and_unload()
            self.tuner = None
