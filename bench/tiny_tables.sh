#!/usr/bin/env bash
# The tiny-scale tables of docs/reproduce.md ("Measured at the tiny scale"): Instruct-Align
# Table 4 (zero-shot, mlm, (IA)1 r = 0 / 1000 / 10000) and the active-forgetting grid
# (Baseline / BA / AFA), seeds 0 1 2, on one CPU core.
#
#   bash bench/tiny_tables.sh OUT_DIR [ia|af|all]     # e.g. /tmp/tiny-tables all
#
# IA: the rows of one seed share their first two stages (pretrain, English tuning), so they
# are trained once, as the zero-shot row (experiment=ia_zeroshot); each other row is the
# (IA)1 stage alone (experiment=ia_instruct) from that row's tune model. Evaluation: NusaX and
# NusaWrites after the last stage only, the first $ROWS test rows per language, 6 prompts.
# AF: grid=af_paper, perplexity and isotropy (Tables 1-2) after the last stage only.
# docs/reproduce.md's batch: SEEDS=0 ... af; SEEDS="1 2" ... ia; SEEDS="1 2" ... af (after seed 0 of ia).
set -uo pipefail
OUT=${1:?usage: bash bench/tiny_tables.sh OUT_DIR [ia|af|all]}
WHAT=${2:-all}
PY=${PYTHON:-python}
SEEDS=${SEEDS:-0 1 2}
ROWS=${ROWS:-40}
AF_EVAL=${AF_EVAL:-perplexity,isotropy}   # add flores_4shot for Table 3 (greedy generation: slower)
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1   # one core
run() { "$PY" -m adaptlang.cli run "$@"; }
IA_EVAL=(languages=nusax "eval.benchmarks=[nusax,nusawrites]" eval.stages=last
         "eval.classify.max_examples=$ROWS" "output_dir=$OUT/ia")

if [[ $WHAT == ia || $WHAT == all ]]; then
  for s in $SEEDS; do
    run experiment=ia_zeroshot strategy=none "${IA_EVAL[@]}" seed="$s" name="zero-shot-s$s"
    TUNED="model.name_or_path=$OUT/ia/zero-shot-s$s/stages/tune/model"
    ROW=(experiment=ia_instruct model=pretrained "$TUNED" eval.base=false "${IA_EVAL[@]}" seed="$s")
    run "${ROW[@]}" strategy=mlm name="mlm-s$s"
    for r in 0 1000 10000; do
      run "${ROW[@]}" strategy=xling+replay "strategy.xling.known=[en,id]" strategy.replay.size=$r name="ia-r$r-s$s"
    done
  done
  "$PY" -m adaptlang.cli compare "$OUT"/ia/*-s* --baseline "$OUT/ia/zero-shot-s0" --out "$OUT/compare-ia"
fi

if [[ $WHAT == af || $WHAT == all ]]; then
  for s in $SEEDS; do   # seed by seed, so that an interrupted batch leaves whole seeds
    run grid=af_paper seed="$s" "eval.benchmarks=[$AF_EVAL]" eval.stages=last \
      "output_dir=$OUT/af"
  done
  "$PY" -m adaptlang.cli compare "$OUT"/af/*-s* --baseline "$OUT/af/Baseline-s0" --out "$OUT/compare-af"
fi
