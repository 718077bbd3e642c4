"""Run by tests/test_multiprocess.py, as one process or under ``accelerate launch``: one
training stage with af and replay on a tiny model (``main``), or two stages with EWC, whose
importances from the first stage penalize the second (``main_ewc``, argv[2] == "ewc");
writes per-step losses and every rank's final weights checksum to the folder in argv[1]."""
import json
import os
import sys

import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from accelerate import Accelerator  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from adaptlang import instructions  # noqa: E402
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


def main_ewc(out: str, steps: int = 4) -> None:

    ewc, recorder = build_strategy("ewc", ewc_lambda=1e4, fisher_batches=2), Recorder()  # before the process group, as the pipeline
    accelerator = Accelerator(cpu=True)  # does: avalanche refuses to be imported on rank > 0 once it exists
    model, tokenizer, ctx, stream = setup("adapt", 1, stream_seed=3)
    tcfg = OmegaConf.create(TCFG)
    model, _ = train_stage(model, tokenizer, ewc.setup_data(stream, ctx), [ewc, recorder], tcfg, steps, accelerator, ctx)
    ctx.model = model
    ewc.on_stage_end(ctx)  # importances on the first stage's batches: every rank draws the same ones
    importances = [float(imp.data.double().sum()) for imp in ewc.plugin.importances[0].values()]
    model, tokenizer, ctx, stream = setup("instruct", 2, stream_seed=4, model=model, tokenizer=tokenizer)
    model, _ = train_stage(model, tokenizer, ewc.setup_data(stream, ctx), [ewc, recorder], tcfg, steps, accelerator, ctx)
    with open(os.path.join(out, f"rank{accelerator.process_index}.json"), "w") as f:
        json.dump({"world": accelerator.num_processes, "losses": recorder.losses, "importances": importances,
                   "penalty": float(ewc.penalty(model).detach()), **checksums(model)}, f)


if __name__ == "__main__":
    torch.set_num_threads(1)
    if sys.argv[2:3] == ["ewc"]:
        main_ewc(sys.argv[1], *(int(a) for a in sys.argv[3:]))
    else:
        main(sys.argv[1], *(int(a) for a in sys.argv[2:4]), fsdp=sys.argv[4:5] == ["fsdp"])
