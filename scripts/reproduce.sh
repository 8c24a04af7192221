#!/usr/bin/env bash
# Reproduce the baseline table: train the 8 models (4 architectures x {E+D, DI}), evaluate each
# on the test split, and print the per-model summaries.
#
#   scripts/reproduce.sh [quick|full] [SEED]
#
# Every step is resumable: rerun the same command after an interruption and finished work
# (reference geometries, DI targets, training checkpoints, evaluated molecules) is reused.
set -euo pipefail
PRESET="${1:-quick}"
SEED="${2:-0}"
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
for arch in xcdiff nagai nlmp egxc; do
  for loss in ed di; do
    out="submissions/${arch}-${loss}"
    echo "== train ${arch} ${loss} (preset ${PRESET}, seed ${SEED}) -> ${out}"
    "$PY" -m harness.cli train --arch "$arch" --loss "$loss" --preset "$PRESET" --seed "$SEED" --out "$out"
  done
done
for arch in xcdiff nagai nlmp egxc; do
  for loss in ed di; do
    echo "== evaluate submissions/${arch}-${loss} on the test split"
    "$PY" -m harness.cli evaluate "submissions/${arch}-${loss}" --split test --quiet
  done
done
# the E+D vs DI table in docs/reproduction.md, then the leaderboard
"$PY" -m harness.reproduction --results results --doc docs/reproduction.md
"$PY" -m harness.cli leaderboard publish
