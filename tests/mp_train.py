"""Run by tests/test_multiprocess.py, as one process, under ``accelerate launch`` or ``torchrun``:
one training stage with af and replay on a tiny model (``main``), or two stages with EWC, SI
and A-GEM together, whose importances and memory from the first stage act in the second, the
second also interrupted after a checkpoint and resumed (``main_memory``; argv[2] == "memory",
argv[4:] the modes, "ddp" and/or "fsdp" (sharded), run one after the other in the same
processes, each into its own subfolder); writes per-step losses and every rank's final weights
to the folder in argv[1]."""
import copy
import json
import os
import sys
from pathlib import Path

import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from accelerate import Accelerator  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from adaptlang import instructions  # noqa: E402
from adaptlang.checkpoint import Checkpointer  # noqa: E402
from adaptlang.composition import build_strategy  # noqa: E402
from adaptlang.sources import read_text  # noqa: E402
from adaptlang.data import ExampleStream  # noqa: E402
from adaptlang.languages import CORPORA  # noqa: E402
from adaptlang.sharding import fsdp_accelerator, fsdp_plugin, local, sharded  # noqa: E402
from adaptlang.models import build_model, train_tokenizer  # noqa: E402
from adaptlang.strategy import StageContext, Strategy  # noqa: E402
from adaptlang.train import train_stage  # noqa: E402

TCFG = {"batch_size": 8, "grad_accum": 2, "lr": 3e-3, "weight_decay": 0.1, "betas": [0.9, 0.95], "eps": 1e-8,
        "warmup_ratio": 0.0, "max_grad_norm": 1.0, "log_every": 100, "max_length": 64, "packing": True}
MODEL = {"architecture": "mistral", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
         "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 128,
         "initializer_range": 0.02, "tie_word_embeddings": True}


class Recorder(Strategy):
    name = "recorder"

    def __init__(self):
        self.losses, self.embedding_rows = [], []

    def on_step_end(self, state):
        self.losses.append(state.loss)
        self.embedding_rows.append(local(state.model.get_input_embeddings().weight).shape[0])  # this rank's rows


def setup(name: str = "instruct", index: int = 2, stream_seed: int = 3, model=None, tokenizer=None):
    if tokenizer is None:
        tokenizer = train_tokenizer(read_text(str(CORPORA / "ntrex128" / "eng-US.txt.gz"), 200),
                                    OmegaConf.create({"vocab_size": 400}), seed=0)
        model = build_model(OmegaConf.create(MODEL), tokenizer, 0)
    ctx = StageContext(name=name, index=index, seed=0, train=OmegaConf.create(TCFG), tokenizer=tokenizer, model=model)
    new = instructions.build("english", ["en"], None, 0)[::7]  # variable-length examples
    stream = ExampleStream(instructions.encode_all(new, tokenizer, 64), seed=stream_seed)
    return model, tokenizer, ctx, stream


def checksums(model) -> dict:
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    return {"weights_sum": float(flat.double().sum()), "weights_abs": float(flat.double().abs().sum()),
            "weights_head": flat[:64].tolist(), "weights_count": flat.numel()}


def all_weights(model) -> list[float]:
    return torch.cat([p.detach().flatten() for p in model.parameters()]).tolist()


def make_accelerator(fsdp: bool) -> Accelerator:
    """As the pipeline makes it (adaptlang.pipeline.make_accelerator) for device=cpu."""
    if not fsdp:
        return Accelerator(cpu=True)
    plugin = fsdp_plugin()
    accelerator = Accelerator(cpu=True, fsdp_plugin=plugin)
    fsdp_accelerator(accelerator, plugin)
    return accelerator


def main(out: str, steps: int = 6, af_every: int = 2, fsdp: bool = False) -> None:
    accelerator = make_accelerator(fsdp)
    model, tokenizer, ctx, stream = setup()
    tcfg = OmegaConf.create(TCFG)
    recorder, af, replay = Recorder(), build_strategy("af", every=af_every), build_strategy("replay", size=30, policy="balanced")
    stream = replay.setup_data(stream, ctx)
    model, stats = train_stage(model, tokenizer, stream, [af, replay, recorder], tcfg, steps, accelerator, ctx)
    with open(os.path.join(out, f"rank{accelerator.process_index}.json"), "w") as f:
        json.dump({"world": accelerator.num_processes, "sharded": sharded(accelerator), "losses": recorder.losses,
                   "af_resets": af.resets, "plain": plain_transformers(model), "embedding_rows": recorder.embedding_rows,
                   "weights": all_weights(model),
                   "tokens": stats["tokens"], "loss_tokens": stats["loss_tokens"], **checksums(model)}, f)


def plain_transformers(model) -> bool:
    """The model handed back is a plain transformers model of plain tensors (sharded or not)."""
    from torch.distributed.tensor import DTensor
    return type(model).__name__ == "MistralForCausalLM" and not any(isinstance(p, DTensor) for p in model.parameters())


MEMORY = {"ewc": {"ewc_lambda": 1e4, "fisher_batches": 2}, "si": {"si_lambda": 1e3, "eps": 1e-7},
          "agem": {"patterns_per_experience": 16, "sample_size": 4}}
# AdamW's step is scale-free: where an element's gradient cancels to ~0, the 1- and 2-process
# roundings differ relatively much and move it by up to lr; a smaller lr keeps that well under 1e-5
MEMORY_TCFG = {**TCFG, "lr": 1e-3}


class Interrupted(Exception):
    pass


class StopAt(Strategy):
    """Raises on every rank after the given step (a checkpoint was written before)."""
    name = "stop"

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, state):
        if state.step == self.step:
            raise Interrupted()


def memory_strategies(state: dict | None = None) -> list[Strategy]:
    """ewc, si and agem (built before the process group: avalanche refuses to be imported on
    rank > 0 once it exists), with the state of a first stage when given."""
    built = [build_strategy(name, **kwargs) for name, kwargs in MEMORY.items()]
    for strategy in built if state else ():
        strategy.load_state_dict(copy.deepcopy(state[strategy.name]))
    return built


def memory_stage(model, tokenizer, strategies, steps, accelerator, name, index, seed, checkpointer=None):
    model, tokenizer, ctx, stream = setup(name, index, stream_seed=seed, model=model, tokenizer=tokenizer)
    for strategy in strategies:
        stream = strategy.setup_data(stream, ctx)
    recorder = Recorder()
    model, _ = train_stage(model, tokenizer, stream, [*strategies, recorder], OmegaConf.create(MEMORY_TCFG), steps,
                           accelerator, ctx, checkpointer)
    ctx.model = model
    return model, recorder.losses, ctx


def main_memory(out: str, steps: int = 4, fsdp: bool = False) -> None:
    """Stage 1 (adapt) and stage 2 (instruct), with ewc, si and agem acting in both; then stage 2
    again with checkpoints, cut after step 3 (checkpoint at step 2) and resumed from there."""
    strategies = memory_strategies()
    accelerator = make_accelerator(fsdp)
    model, first_losses, ctx = memory_stage(None, None, strategies, steps, accelerator, "adapt", 1, 3)
    for strategy in strategies:
        strategy.on_stage_end(ctx)
    tokenizer, first = ctx.tokenizer, {s.name: copy.deepcopy(s.state_dict()) for s in strategies}
    first_model = copy.deepcopy(model)  # a cut stage leaves its model released (sharded): every run starts anew
    ewc, si, agem = strategies
    model, losses, ctx = memory_stage(copy.deepcopy(first_model), tokenizer, strategies, steps, accelerator,
                                      "instruct", 2, 4)
    result = {"world": accelerator.num_processes, "sharded": sharded(accelerator), "losses": first_losses + losses,
              "ewc_importances": [float(i.data.double().sum()) for i in ewc.plugin.importances[0].values()],
              "si_importances": [float(i.data.double().sum()) for i in si.plugin.ewc_data[1].values()],
              "ewc_penalty": float(ewc.penalty(model).detach()), "si_penalty": float(si.penalty(model).detach()),
              "agem_projections": agem.projections, "plain": plain_transformers(model), "weights": all_weights(model)}
    folder, resumed = Path(out) / "checkpoints", []  # rank 0 writes, every rank reads
    for cut in (True, False):
        again = memory_strategies(first)
        checkpointer = Checkpointer(folder, every=2, owner=accelerator.is_main_process)
        try:
            model, resumed, _ = memory_stage(copy.deepcopy(first_model), tokenizer,
                                             [*again, StopAt(3)] if cut else again, steps, accelerator,
                                             "instruct", 2, 4, checkpointer)
        except Interrupted:
            accelerator.free_memory()  # the cut stage's prepared model and optimizer, as a new process would
    result["resumed_losses"], result["resumed_weights"] = resumed, all_weights(model)
    with open(os.path.join(out, f"rank{accelerator.process_index}.json"), "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    torch.set_num_threads(1)
    if sys.argv[2:3] == ["memory"]:
        for mode in sys.argv[4:]:  # ddp, fsdp: one after the other in the same processes
            os.makedirs(os.path.join(sys.argv[1], mode), exist_ok=True)
            main_memory(os.path.join(sys.argv[1], mode), int(sys.argv[3]), fsdp=mode == "fsdp")
    else:
        main(sys.argv[1], *(int(a) for a in sys.argv[2:4]), fsdp=sys.argv[4:5] == ["fsdp"])
