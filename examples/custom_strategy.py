"""A plugin strategy in one file, composed with a built-in one: an L2-SP penalty next to replay.

    .venv/bin/python examples/custom_strategy.py

``anchor`` is L2-SP (Li, Grandvalet & Davoine, ICML 2018): a loss term alpha * ||theta - theta_0||^2
that keeps the trainable weights near the ones its stage started from. It is registered by name
(``strategy=anchor``), declares its phase (where it sets up among a stage's strategies) and
takes its options from ``strategy.anchor.*`` (the defaults are its ``__init__`` defaults: a
plugin needs no YAML file). The run composes it with the built-in ``replay`` in the instruct
stage, a few steps on a few lines per language (well under a minute on a CPU), then reads the
figures both strategies wrote into metrics.json. Runs go to $ADAPTLANG_EXAMPLE_OUT (default:
runs/examples). More: docs/writing-a-strategy.md.
"""
import json
import os

import torch

import adaptlang
from adaptlang import Strategy, register_strategy


@register_strategy("anchor")
class Anchor(Strategy):
    """Penalize the squared distance of the trainable weights from their values at the stage start."""

    # Set up in the "model" phase (the default, written out here): after "vocabulary", so a
    # vocabulary that grows in the same stage is grown before the anchor copies the rows.
    phase = "model"
    stages = ("instruct",)  # default stages (a plugin without a YAML file); strategy.anchor.stages=[...]

    def __init__(self, alpha: float = 0.01):  # strategy.anchor.alpha=...
        if float(alpha) < 0:
            raise adaptlang.UserError(f"strategy.anchor.alpha={alpha}: must be >= 0")
        self.alpha = float(alpha)
        self.start: dict = {}  # parameter name -> its value at the stage start

    def setup_model(self, model, tokenizer, ctx):
        if not self.start:  # a resumed stage already has its anchor (load_state_dict)
            self.start = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        return model, tokenizer  # nothing on the model changes: there is nothing to undo

    def drift(self, model) -> torch.Tensor:
        params = dict(model.named_parameters())
        for n, p0 in self.start.items():
            if p0.device != params[n].device:  # the anchor was taken before the model was placed
                self.start[n] = p0.to(params[n].device)
        return sum(((params[n] - p0) ** 2).sum() for n, p0 in self.start.items())

    def extra_loss(self, batch, outputs, state):
        return self.alpha * self.drift(state.model)  # added to the step's loss

    def on_stage_end(self, ctx):
        with torch.no_grad():
            ctx.notes["anchor_drift"] = round(float(self.drift(ctx.model)), 6)  # -> metrics.json
        self.start = {}

    def state_dict(self) -> dict:  # tensors go to safetensors: a resumed run continues exactly
        return {"start": self.start}

    def load_state_dict(self, state: dict) -> None:
        self.start = dict(state["start"])


OUT = os.environ.get("ADAPTLANG_EXAMPLE_OUT", "runs/examples")
# A few steps, a narrower model, few lines per language, few evaluation sentences.
QUICK = ["train.max_steps=3", "train.batch_size=4", "train.block_size=32", "train.max_length=64",
         "model.hidden_size=32", "model.intermediate_size=64", "model.num_hidden_layers=1",
         "model.tokenizer.vocab_size=1500", "model.tokenizer.character_coverage=0.99",
         "data.max_lines_per_language=60", "eval.max_sentences=3"]

if __name__ == "__main__":
    cfg = adaptlang.load_config([
        "strategy=anchor+replay",  # set up by phase: replay ("mixture") first, then anchor ("model")
        "strategy.anchor.alpha=0.05", "strategy.replay.size=16",
        "name=custom-strategy", f"output_dir={OUT}", "overwrite=true", *QUICK,
    ])
    print("strategies as written:", list(cfg.strategy), "| set-up order:", adaptlang.compose(cfg.strategy).names,
          "| anchor:", dict(cfg.strategy.anchor))
    run_dir = adaptlang.run(cfg)

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "complete"
    instruct = metrics["stages"]["instruct"]
    notes = instruct["strategy_notes"]
    print(f"instruct: strategies={instruct['strategies']} loss {instruct['train']['first_loss']:.3f} -> "
          f"{instruct['train']['final_loss']:.3f}; anchor_drift={notes['anchor_drift']} "
          f"replay_buffer_size={notes['replay_buffer_size']}")
    assert instruct["strategies"] == ["replay", "anchor"] and notes["anchor_drift"] > 0
    assert "anchor_drift" not in metrics["stages"]["adapt"].get("strategy_notes", {})  # it acts in instruct only
    print("run directory:", run_dir)
