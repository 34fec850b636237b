#!/bin/bash
# Submits docanalyze over N array tasks, then the merge once all of them succeeded:
#
#   INPUT=/data/docs OUT_DIR=/data/out deploy/slurm/submit.sh 16 [more sbatch flags]
#
# Prints the two job ids (array, merge).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
shards=${1:?usage: INPUT=... OUT_DIR=... submit.sh NUMBER_OF_SHARDS [sbatch flags]}
shift
: "${INPUT:?set INPUT to the documents}"
array=$(sbatch --parsable --array="0-$((shards - 1))" --export=ALL "$@" "$here/docanalyze.sbatch")
array=${array%%;*}
merge=$(sbatch --parsable --dependency="afterok:$array" --export=ALL "$@" "$here/merge.sbatch")
echo "$array ${merge%%;*}"
