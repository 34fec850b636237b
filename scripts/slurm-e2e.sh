#!/usr/bin/env bash
# Many machines, end to end on a real (single-node) Slurm: installs and starts one on this
# machine (scripts/slurm-cluster.sh), submits deploy/slurm/docanalyze.sbatch as a 4-task array
# over sample-data/docs with the merge after it (deploy/slurm/submit.sh: --dependency=afterok),
# requeues one task while it runs (scontrol requeue), and checks that the merged output holds
# every document exactly once, with the records of a single-machine run; then stops the
# daemons by their PIDs. Run by .ci/run after the tests (needs target/release/docanalyze and the
# default model). usage: scripts/slurm-e2e.sh   (as root; KEEP=1 keeps the folder to look at)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
t0=$SECONDS
fail() { echo "slurm-e2e: FAIL: $*" >&2; exit 1; }

bin=$repo/target/release/docanalyze
[[ -x $bin ]] || cargo build --release --quiet
model=$(scripts/fetch-model.sh)
scripts/slurm-cluster.sh install
dir=$(mktemp -d /tmp/slurm-e2e.XXXXXX)
cleanup() {
  local status=$?
  scripts/slurm-cluster.sh stop "$dir"
  [[ -n ${KEEP:-} ]] || rm -rf "$dir"
  echo "slurm-e2e: wall time $((SECONDS - t0)) s (install, start, runs, stop)"
  # The plain closing line test harnesses read.
  if [[ $status == 0 ]]; then echo "slurm-e2e: 1 passed, 0 failed"; else echo "slurm-e2e: 0 passed, 1 failed"; fi
}
trap cleanup EXIT
start=$(scripts/slurm-cluster.sh start "$dir") || fail "the cluster did not start"
eval "$start" # export SLURM_CONF=$dir/slurm.conf

# The same documents and settings for the array and the single-machine reference. Short
# contexts keep it quick; a few seconds per task leave time to requeue one mid-run.
export INPUT=$repo/sample-data/docs OUT_DIR=$dir/out DOCANALYZE=$bin DOCANALYZE_MODEL=$model
export DOCANALYZE_ARGS="--ctx-size 512 --max-tokens 8 --sequences 2 --overflow truncate"
# shellcheck disable=SC2086
"$bin" run "$INPUT" $DOCANALYZE_ARGS --threads 2 -q -o "$dir/single.jsonl"
documents=$(wc -l <"$dir/single.jsonl")

read -r array merge < <(deploy/slurm/submit.sh 4 --chdir="$dir" --cpus-per-task=1)
echo "slurm-e2e: array job $array, merge job $merge"

# Requeue the first task seen running once it has written a record (and before it is done).
requeued=""
for _ in $(seq 600); do
  for task in $(squeue -h -j "$array" -t RUNNING -o %K 2>/dev/null); do
    out=$(printf '%s/results-%05d-of-00004.jsonl' "$OUT_DIR" "$task")
    if [[ -s $out ]]; then
      requeued=$task
      break 2
    fi
  done
  sleep 0.1
done
[[ -n $requeued ]] || fail "no task of $array seen running with records written"
scontrol requeue "${array}_${requeued}"
written=$(wc -l <"$(printf '%s/results-%05d-of-00004.jsonl' "$OUT_DIR" "$requeued")")
echo "slurm-e2e: requeued task $requeued after $written record(s)"

# Wait for the merge job (it runs only once every array task succeeded).
state=""
for _ in $(seq 1200); do
  state=$(scontrol show job "$merge" -o 2>/dev/null | grep -o 'JobState=[A-Z_]*' || true)
  [[ $state == JobState=@(PENDING|RUNNING|CONFIGURING|COMPLETING) ]] || break
  sleep 0.5
done
[[ $state == JobState=COMPLETED ]] || {
  cat "$dir"/docanalyze-*.log "$dir"/docanalyze-merge-*.log 2>/dev/null || true
  fail "merge job $merge: ${state:-unknown}"
}

# The requeued task ran twice; every task completed.
log=$(printf '%s/docanalyze-%s_%s.log' "$dir" "$array" "$requeued")
grep -q "attempt 2" "$log" || fail "task $requeued did not run again: $(cat "$log")"
states=$(squeue -h -j "$array" -t all -o '%K %T' | sort)
[[ $(grep -c ' COMPLETED$' <<<"$states") == 4 ]] || fail "not all tasks COMPLETED: $states"

# Every document exactly once, as the single machine wrote it.
python3 - "$dir/single.jsonl" "$OUT_DIR/results.jsonl" "$OUT_DIR/report.json" <<'PY'
import json, sys
single_path, merged_path, report_path = sys.argv[1:]
def outcomes(path):
    rows = [json.loads(line) for line in open(path) if line.strip()]
    return rows, sorted((r["id"], r["status"], r["output"]) for r in rows)
single_rows, single = outcomes(single_path)
merged_rows, merged = outcomes(merged_path)
ids = [r["id"] for r in merged_rows]
assert len(ids) == len(set(ids)), "a document appears twice in the merged output"
assert merged == single, "the merged records differ from the single-machine run"
report = json.load(open(report_path))
assert report["records"] == len(single) and report["missing_shards"] == [], report
print(f"slurm-e2e: merged {len(merged)} records == single-machine run; report docs_per_min {report['docs_per_min']:.1f}")
PY
echo "slurm-e2e: OK ($documents documents, 4 shards, task $requeued requeued)"
