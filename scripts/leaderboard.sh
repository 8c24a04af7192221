#!/usr/bin/env bash
# Re-evaluate submissions on the test split and regenerate the committed leaderboard from them.
#
#   scripts/leaderboard.sh [SUBMISSION ...]   (default: every folder in submissions/ but skala-1.0,
#                                              whose test split takes hours: name it to include it)
#   EVAL_ARGS="--no-excitations" scripts/leaderboard.sh nlmp-ed   (extra options for harness evaluate)
#   SCHEDULER=local:2 scripts/leaderboard.sh                      (run the sweep on Dask)
#   RESULTS=studies/paper/results scripts/leaderboard.sh xcdiff-di  (evaluate into, and copy from, there)
#
# Resumable: 'harness evaluate' caches every finished molecule, so rerun the same command after an
# interruption. Each result's summary.json and per_molecule.csv are copied together into
# leaderboard/results/<name>/test/ (they are one unit: the summary names the CSV's sha256), then
# 'harness leaderboard publish --results leaderboard/results' rewrites leaderboard/.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
RESULTS="${RESULTS:-results}"
if [ "$#" -gt 0 ]; then
    names=("$@")
else
    names=()
    for d in submissions/*/; do
        n=$(basename "$d")
        [ "$n" = "skala-1.0" ] || names+=("$n")
    done
fi
# one call, one batch of tasks for all of them (each into $RESULTS/<name>/test/); SCHEDULER=local:2 or
# SCHEDULER=tcp://HOST:8786 runs it on Dask (docs/distributed.md)
dirs=()
for n in "${names[@]}"; do dirs+=("submissions/$n"); done
echo "== evaluate ${names[*]} on the test split"
# shellcheck disable=SC2086
"$PY" -m harness.cli evaluate "${dirs[@]}" --split test --quiet --out "$RESULTS" ${SCHEDULER:+--scheduler "$SCHEDULER"} ${EVAL_ARGS:-}
for n in "${names[@]}"; do
    mkdir -p "leaderboard/results/$n/test"
    cp "$RESULTS/$n/test/per_molecule.csv" "$RESULTS/$n/test/summary.json" "leaderboard/results/$n/test/"
done
"$PY" -m harness.cli leaderboard publish --results leaderboard/results
