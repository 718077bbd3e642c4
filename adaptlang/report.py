"""The human report of one run (Markdown)."""
from __future__ import annotations

from pathlib import Path

from .config import to_yaml
from .rundir import write_atomic


def _fmt(x) -> str:
    return f"{x:.3f}" if isinstance(x, float) else str(x)


def _vocab_table(metrics: dict) -> list[str]:
    """Token fertility before/after a vocabulary expansion (strategy ``vocab``)."""
    lines = []
    for name, st in metrics["stages"].items():
        vocab = st["strategy_notes"].get("vocab")
        if not vocab:
            continue
        lines += ["", f"## Vocabulary expansion (stage {name})", "",
                  f"{vocab['added_tokens']:,} tokens added ({vocab['vocab_size_before']:,} -> "
                  f"{vocab['vocab_size_after']:,}); {vocab['dropped_for_old_languages']:,} new pieces dropped to keep "
                  "the protected languages' tokenization exact.", "",
                  "| language | class | tokens/word before | after | tokens/char before | after |",
                  "|---|---|---:|---:|---:|---:|"]
        for code, f in vocab["fertility"].items():
            b, a = f["before"], f["after"]
            lines.append(f"| {code} | {f['class']} | {b['tokens_per_word']:.2f} | {a['tokens_per_word']:.2f} | "
                         f"{b['tokens_per_char']:.3f} | {a['tokens_per_char']:.3f} |")
    return lines


def write_report(path: Path, metrics: dict, cfg) -> None:
    lines = [f"# adaptlang run `{metrics['run']}`", "",
             f"Strategies: {' + '.join(metrics['strategies']) or 'none'} | seed {metrics['seed']} | "
             f"model: {metrics['model']['source']}, {metrics['model']['parameters']['total']:,} parameters, "
             f"vocabulary {metrics['model']['vocab_size']:,} | {metrics.get('seconds', '?')} s in all", "",
             "## Training", "",
             "| stage | strategies | steps | tokens | seconds | tokens/s | first loss | final loss |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for name, st in metrics["stages"].items():
        t = st["train"]
        lines.append(f"| {name} | {', '.join(st['strategies']) or '-'} | {t['steps']} | {t['tokens']:,} | "
                     f"{t['seconds']:.1f} | {t['tokens_per_second']:,.0f} | {t['first_loss']:.3f} | {t['final_loss']:.3f} |")
    for name, st in metrics["stages"].items():
        for key, value in st["strategy_notes"].items():
            if key == "vocab":  # a table of its own below
                value = {k: v for k, v in value.items() if k != "fertility"}
            lines.append(f"- {name}: {key} = {value}")
    lines += _vocab_table(metrics)
    ppl = {n: st["eval"].get("perplexity") for n, st in metrics["stages"].items() if "perplexity" in st["eval"]}
    if ppl:
        classes = list(next(iter(ppl.values()))["classes"])
        lines += ["", "## Held-out perplexity by language class", "",
                  "Per token (not comparable across tokenizers) and bits per character (comparable).", "",
                  "| stage | " + " | ".join(f"{c} ppl/token | {c} bits/char" for c in classes) + " |",
                  "|---|" + "---:|---:|" * len(classes)]
        for stage, res in ppl.items():
            cells = []
            for c in classes:
                v = res["classes"].get(c, {})
                cells += [_fmt(v.get("ppl_token", "-")), _fmt(v.get("bits_per_char", "-"))]
            lines.append(f"| {stage} | " + " | ".join(cells) + " |")
        last = list(ppl.values())[-1]
        if last["skipped"]:
            lines += ["", "Skipped languages: " + "; ".join(f"{c} ({why})" for c, why in last["skipped"].items())]
        lines += ["", "### Per language (last stage)", "", "| language | class | ppl/token | bits/char | source |",
                  "|---|---|---:|---:|---|"]
        for code, v in last["languages"].items():
            lines.append(f"| {code} | {v['class']} | {v['ppl_token']:.2f} | {v['bits_per_char']:.3f} | {v['source']} |")
    lines += _benchmark_tables(metrics)
    env = metrics["environment"]
    lines += ["", "## Environment", "", ", ".join(f"{k} {v}" for k, v in env.items()), "",
              "## Resolved config", "", "```yaml", to_yaml(cfg).rstrip(), "```", ""]
    write_atomic(path, "\n".join(lines))


def _figures(classes: dict) -> tuple[list[str], list[str]]:
    cols = list(classes)
    metrics = [m for m in next(iter(classes.values()), {}) if not m.startswith("n_")]
    return cols, metrics


def _benchmark_tables(metrics: dict) -> list[str]:
    """Class-level figures of every benchmark but perplexity, then forgetting (change from
    the baseline stage, adaptlang.forgetting)."""
    lines: list[str] = []
    stages = metrics["stages"]
    benches = [b for st in stages.values() for b in st["eval"] if b != "perplexity"]
    for bench in dict.fromkeys(benches):
        rows = {n: st["eval"][bench] for n, st in stages.items() if bench in st["eval"]}
        cols, names = _figures(next(iter(rows.values()))["classes"])
        lines += ["", f"## {bench} by class", "", "| stage | metric | " + " | ".join(cols) + " |",
                  "|---|---|" + "---:|" * len(cols)]
        for stage, res in rows.items():
            for m in names:
                lines.append(f"| {stage} | {m} | " + " | ".join(_fmt(res["classes"].get(c, {}).get(m, "-")) for c in cols) + " |")
        last = list(rows.values())[-1]
        if last.get("skipped"):
            lines += ["", "Skipped: " + "; ".join(f"{c} ({why})" for c, why in last["skipped"].items())]
        if last.get("signatures"):
            lines += ["", "Signatures: " + "; ".join(f"{k} `{v}`" for k, v in last["signatures"].items())]
    forg = metrics.get("forgetting")
    if forg and forg.get("deltas"):
        lines += ["", f"## Forgetting: change from stage `{forg['baseline']}`", "",
                  "later - baseline per class; * marks a change for the worse "
                  f"(lower is better: {', '.join(m for m, d in forg['direction'].items() if d == 'lower') or '-'}).", ""]
        for stage, benches in forg["deltas"].items():
            for bench, classes in benches.items():
                cols, names = _figures(classes)
                bad = forg.get("worse", {}).get(stage, {}).get(bench, {})
                lines += [f"**{stage} / {bench}**", "", "| metric | " + " | ".join(cols) + " |",
                          "|---|" + "---:|" * len(cols)]
                for m in names:
                    cells = []
                    for c in cols:
                        v = classes.get(c, {}).get(m)
                        cells.append("-" if v is None else f"{v:+.3f}" + ("*" if m in bad.get(c, []) else ""))
                    lines.append(f"| {m} | " + " | ".join(cells) + " |")
                lines.append("")
    return lines
