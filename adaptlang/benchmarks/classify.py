"""Zero-shot classification by label-word likelihood, defined by YAML files (NusaX-style).

Instruct-Align (IA paper) section 4.3: zero-shot cross-lingual inference on NusaX sentiment
with 6 prompts (3 English, 3 Indonesian); the score is accuracy and weighted F1, averaged
over the prompts. Here:

* a task is a YAML file (``benchmarks/tasks/*.yaml``, or any file/folder listed in
  ``eval.classify.task_files``) naming a data folder with one sub-folder per language and
  one CSV per split (columns ``text``, ``label``), the label set, the label words of each
  prompt language, and the prompts. The benchmark's name is the YAML's ``name``
  (``tasks/*.yaml`` are registered on import; the user's files are looked up from the
  config at each run); a new dataset plugs in with a YAML file and its CSVs, no code;
* every example is scored with every prompt: the model's summed log-probability of each
  label word after the prompt (``eval.classify.scoring: label_sum``), or the authors' mean
  log-probability of the whole prompt + label (``sequence_mean``, see below); the prediction
  is the most likely label (ties: first label);
* per language and per prompt: accuracy and weighted F1 (F1 per gold label weighted by
  its support); the language figure is the mean over prompts (both also kept per prompt);
* each language is marked ``pretrained``, ``seen`` or ``unseen`` (IA paper Table 3,
  Figure 2): pretrained = the base model's languages, declared by the language set
  (``base:`` in configs/languages/*.yaml; nusax: en, id) or listed in
  ``eval.classify.pretrained_languages`` (which wins); seen = trained in any stage of the
  experiment (text or instruction data) and not pretrained; unseen = the rest. Only a set
  without ``base`` falls back to "pretrained = the first stage's languages".
  ``eval.classify.seen_languages`` (a class or codes) replaces the stage rule for "seen": a
  zero-shot baseline trains none of the new languages but is grouped like the runs it is
  compared with (``experiment=ia_zeroshot`` sets it to the ``seen`` class). The status
  comes from the config, so it is the same after every stage (a stage's metrics can be
  compared with the next) and the forgetting table, which differences these classes,
  uses it too.
  Class figures are unweighted means over languages of each status, plus ``overall``.

Prompts: the IA paper does not print its 6 prompts. ``tasks/nusax.yaml`` (benchmark
``nusax``) has the sentiment prompts of the authors' released evaluation code (public
repository HLTCHKUST/InstructAlign, nlu_prompt.py; answer options filled in as its
main_nlu_prompt.py does); ``tasks/nusawrites.yaml`` (``nusawrites``) the same prompts for
NusaWrites; ``tasks/nusax_adaptlang.yaml`` (``nusax_adaptlang``) keeps adaptlang's earlier
prompts, which list no options. Scoring: by default the label is scored by the summed
log-probability of its word after the prompt; ``eval.classify.scoring: sequence_mean`` compares
the mean log-probability of every token of prompt + label after the first, as the released
main_nlu_prompt.py does for decoder models (``experiment=ia_paper`` sets it; with a BOS token
the first text token is included, the released code's BLOOMZ tokenizer adds none). It favours
labels whose words are cheap per token and lets the prompt's own likelihood dilute the label's;
it runs every (prompt, label) pair in full, about as many forwards again as there are labels.
Deviations: ``eval.classify.max_examples`` first rows of the
split (NusaX is parallel: row i is the same sentence in every language; ``experiment=ia_paper``
scores all 400); no 8-bit inference.
The prompt is scored once per example and its key/value cache reused for every label
(``_scoring.score_shared_prompt``).
"""
from __future__ import annotations

import csv
import gzip
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from ..errors import UserError, listing, suggest
from ..languages import CORPORA
from ._common import BENCHMARKS, register_benchmark
from ._common import means_by_group
from ._scoring import score_separately, score_shared_prompt
from ..progress import log_seconds, track

TASKS_DIR = Path(__file__).parent / "tasks"
TASK_KEYS = {"name", "description", "data_dir", "split", "languages", "labels", "label_words", "prompts"}
STATUSES = ("pretrained", "seen", "unseen")
SCORINGS = ("label_sum", "sequence_mean")


@dataclass
class Task:
    name: str
    path: Path
    data_dir: Path
    languages: dict[str, str]  # folder name -> language code
    labels: list[str]
    label_words: dict[str, dict[str, str]]  # prompt language -> label -> word
    prompts: list[dict]  # {id, lang, template}
    split: str = "test"
    description: str = ""
    extra: dict = field(default_factory=dict)


def load_task(path: Path) -> Task:
    where = str(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise UserError(f"{where}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise UserError(f"{where}: a task file must be a mapping with keys {listing(TASK_KEYS)}")
    for key in raw:
        if key not in TASK_KEYS:
            raise UserError(f"{where}: unknown key '{key}'.{suggest(key, TASK_KEYS)} Valid: {listing(TASK_KEYS)}")
    for key in ("name", "data_dir", "languages", "labels", "label_words", "prompts"):
        if not raw.get(key):
            raise UserError(f"{where}: missing '{key}' (a task needs {listing(TASK_KEYS - {'description', 'split'})})")
    data = str(raw["data_dir"])
    data_dir = CORPORA / data[len("corpora:"):] if data.startswith("corpora:") else (path.parent / data)
    if not data_dir.is_dir():
        raise UserError(f"{where}: data_dir '{data}' is not a folder ({data_dir})")
    labels = [str(x) for x in raw["labels"]]
    words = {str(k): {str(a): str(b) for a, b in (v or {}).items()} for k, v in raw["label_words"].items()}
    for lang, mapping in words.items():
        if set(mapping) != set(labels):
            raise UserError(f"{where}: label_words.{lang} must give a word for each label {labels}, got {sorted(mapping)}")
    prompts = []
    for i, p in enumerate(raw["prompts"]):
        if not isinstance(p, dict) or "template" not in p or "lang" not in p:
            raise UserError(f"{where}: prompts[{i}] needs 'template' and 'lang' (a key of label_words)")
        t = str(p["template"])
        if t.count("{text}") != 1 or not t.rstrip(" ").endswith("{label}") or t.count("{label}") != 1:
            raise UserError(f"{where}: prompts[{i}].template must contain {{text}} once and end with {{label}}")
        if str(p["lang"]) not in words:
            raise UserError(f"{where}: prompts[{i}].lang '{p['lang']}' has no label_words. Valid: {listing(words)}")
        prompts.append({"id": str(p.get("id", f"p{i}")), "lang": str(p["lang"]), "template": t.rstrip(" ")})
    return Task(name=str(raw["name"]), path=path, data_dir=data_dir,
                languages={str(k): str(v) for k, v in raw["languages"].items()}, labels=labels,
                label_words=words, prompts=prompts, split=str(raw.get("split", "test")),
                description=str(raw.get("description", "")))


def task_benchmark(path: Path):
    """The benchmark function of the task in a YAML file (read again at each call)."""
    def benchmark(model, tokenizer, languages, cfg):
        return run_task(load_task(path), model, tokenizer, languages, cfg)

    benchmark.__doc__ = f"zero-shot classification task from {path}"
    return benchmark


def user_tasks(paths) -> dict[str, Path]:
    """name -> YAML path for ``eval.classify.task_files`` (files, or folders of ``*.yaml``).
    A name may not repeat, nor shadow a built-in benchmark."""
    files: list[Path] = []
    for entry in paths or []:
        p = Path(str(entry))
        if p.is_dir():
            files += sorted(p.glob("*.yaml"))
        elif p.is_file():
            files.append(p)
        else:
            raise UserError(f"eval.classify.task_files: '{entry}' is neither a YAML file nor a folder")
    out: dict[str, Path] = {}
    for f in files:
        name = load_task(f).name
        if name in out:
            raise UserError(f"{f}: task name '{name}' is already used by {out[name]}")
        if name in BENCHMARKS:
            raise UserError(f"{f}: task name '{name}' is already a built-in benchmark; choose another name")
        out[name] = f.resolve()
    return out


def read_split(task: Task, folder: str) -> tuple[list[str], list[str]] | str:
    """(texts, labels) of one language's split (``<split>.csv`` or ``<split>.csv.gz``), or the
    reason it cannot be read."""
    plain = task.data_dir / folder / f"{task.split}.csv"
    path = plain if plain.is_file() else plain.with_name(plain.name + ".gz")
    if not path.is_file():
        return f"no {task.split}.csv or {task.split}.csv.gz in {task.data_dir / folder}"
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or "text" not in rows[0] or "label" not in rows[0]:
        raise UserError(f"{path}: needs columns 'text' and 'label'")
    bad = sorted({r["label"] for r in rows} - set(task.labels))
    if bad:
        raise UserError(f"{path}: labels {bad} are not in the task's label set {task.labels}")
    return [r["text"].strip() for r in rows], [r["label"] for r in rows]


def weighted_f1(gold: list[str], pred: list[str], labels: list[str]) -> float:
    """F1 of each gold label, weighted by its support (scikit-learn's ``average='weighted'``)."""
    g, p = np.array(gold), np.array(pred)
    total = 0.0
    for label in labels:
        support = int((g == label).sum())
        if support == 0:
            continue
        tp = int(((g == label) & (p == label)).sum())
        predicted = int((p == label).sum())
        precision = tp / predicted if predicted else 0.0
        recall = tp / support
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        total += f1 * support
    return total / len(g) if len(g) else 0.0


def _encode(tokenizer, task: Task, prompt: dict, texts: list[str]) -> tuple[list[list[int]], list[list[list[int]]]]:
    """Prompt ids (BOS + text before {label}, trailing spaces moved to the label) and, per
    example, the ids of each label word as it continues that prompt."""
    before = prompt["template"][: -len("{label}")]
    stripped = before.rstrip()
    space = before[len(stripped):]
    words = [space + task.label_words[prompt["lang"]][label] for label in task.labels]
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    contexts = [stripped.replace("{text}", t) for t in texts]
    ctx_ids = tokenizer(contexts, add_special_tokens=False)["input_ids"]
    alone = [tokenizer(w, add_special_tokens=False)["input_ids"] for w in words]
    conts = []
    for ctx, ids in zip(contexts, ctx_ids):
        full = tokenizer([ctx + w for w in words], add_special_tokens=False)["input_ids"]
        conts.append([f[len(ids):] if f[: len(ids)] == ids and len(f) > len(ids) else a
                      for f, a in zip(full, alone)])
    return [bos + ids for ids in ctx_ids], conts


def score_labels(model, ids, conts, pad: int, batch: int, scoring: str) -> np.ndarray:
    """Examples x labels scores. ``label_sum``: the label's summed log-probability after the
    prompt. ``sequence_mean``: the mean log-probability of every token of prompt + label after
    the first (the authors' main_nlu_prompt.py get_logprobs for decoder models, IA 4.3)."""
    if scoring == "label_sum":
        return np.array(score_shared_prompt(model, ids, conts, pad, batch))
    firsts = [p[:1] for p in ids]
    rests = [[p[1:] + c for c in cs] for p, cs in zip(ids, conts)]
    sums = np.array(score_separately(model, firsts, rests, pad, batch))
    return sums / np.array([[len(r) for r in rs] for rs in rests])


def language_status(cfg, languages) -> tuple[dict[str, str], str]:
    """code -> pretrained/seen/unseen (see the module docstring); languages without an entry
    are unseen. Pretrained comes from the language set (``base:``) or
    ``eval.classify.pretrained_languages``, never from the order of the stages, except as the
    last resort for a set without ``base`` (a from-scratch run's first stage builds the model)."""
    ccfg = cfg.eval.get("classify") or {}
    stages = list((cfg.get("experiment") or {}).get("stages") or [])
    explicit = ccfg.get("pretrained_languages")
    base = getattr(languages, "base", None)
    if explicit is not None:
        pretrained = languages.resolve([str(c) for c in explicit])
        rule = "pretrained = eval.classify.pretrained_languages"
    elif base is not None:
        pretrained = list(base)
        rule = "pretrained = the language set's base languages"
    else:
        pretrained = languages.resolve(stages[0].data.get("languages", "all")) if stages else []
        rule = "pretrained = trained in the first stage (the language set declares no base)"
    status = {code: "pretrained" for code in pretrained}
    seen = ccfg.get("seen_languages")
    if seen is not None:  # a baseline that trains none of them, grouped as the runs it is compared with
        for code in languages.resolve(seen if isinstance(seen, str) else [str(c) for c in seen]):
            status.setdefault(code, "seen")
        return status, rule + "; seen = eval.classify.seen_languages; unseen = the rest"
    for stage in stages:
        for code in languages.resolve(stage.data.get("languages", "all")):
            status.setdefault(code, "seen")
    return status, rule + "; seen = trained in any stage; unseen = the rest"


def run_task(task: Task, model, tokenizer, languages, cfg) -> dict:
    ccfg = cfg.eval.get("classify") or {}
    limit = ccfg.get("max_examples")
    wanted = ccfg.get("prompts")
    prompts = [p for p in task.prompts if wanted is None or p["id"] in set(map(str, wanted))]
    if not prompts:
        raise UserError(f"eval.classify.prompts={list(wanted)}: none is a prompt of task '{task.name}'. "
                        f"Valid: {listing(p['id'] for p in task.prompts)}")
    scoring = str(ccfg.get("scoring") or "label_sum")
    if scoring not in SCORINGS:
        raise UserError(f"eval.classify.scoring={scoring!r}: expected one of {listing(SCORINGS)}")
    status, rule = language_status(cfg, languages)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    batch = int(cfg.eval.batch_size)
    per_language, skipped = {}, {}
    for folder, code in track(task.languages.items(), f"eval {task.name}", seconds=log_seconds(cfg)):
        read = read_split(task, folder)
        if isinstance(read, str):
            skipped[code] = read
            continue
        texts, gold = read
        if limit:
            texts, gold = texts[: int(limit)], gold[: int(limit)]
        per_prompt = {}
        for prompt in prompts:
            ids, conts = _encode(tokenizer, task, prompt, texts)
            scores = score_labels(model, ids, conts, pad, batch, scoring)
            pred = [task.labels[i] for i in scores.argmax(axis=1)]
            per_prompt[prompt["id"]] = {"accuracy": float(np.mean(np.array(pred) == np.array(gold))),
                                        "weighted_f1": weighted_f1(gold, pred, task.labels)}
        per_language[code] = {
            "class": status.get(code, "unseen"),
            "accuracy": float(np.mean([v["accuracy"] for v in per_prompt.values()])),
            "weighted_f1": float(np.mean([v["weighted_f1"] for v in per_prompt.values()])),
            "n_examples": len(texts), "prompts": per_prompt,
        }
    groups = {s: [c for c, v in per_language.items() if v["class"] == s] for s in STATUSES}
    return {"languages": per_language, "classes": means_by_group(per_language, groups, ("accuracy", "weighted_f1")),
            "skipped": skipped, "task": {"file": str(task.path), "split": task.split, "labels": task.labels,
                                         "prompts": [p["id"] for p in prompts], "status_rule": rule,
                                         "scoring": scoring}}


def register_builtin_tasks() -> None:
    """Every ``tasks/*.yaml`` becomes a benchmark named by its ``name``."""
    for path in sorted(TASKS_DIR.glob("*.yaml")):
        register_benchmark(load_task(path).name)(task_benchmark(path))


register_builtin_tasks()
