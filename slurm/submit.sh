#!/usr/bin/env bash
# Submits a sharded evaluation to SLURM: builds the script once (here, before any job starts: parallel first builds of
# one file-based program race), then a job array of SHARDS tasks (slurm/eval.sbatch, one shard each) and a merge job
# that starts when every shard has ended well (slurm/merge.sbatch, --dependency=afterok). Needs a filesystem shared
# by this machine and the compute nodes (the repository, its results/ and artifacts/).
#   slurm/submit.sh SCRIPT SHARDS [script options]        e.g. slurm/submit.sh eval-carso 8 --out results/eval-carso
# Environment: ARRAY=3,5 submits only those shards (to resume failed ones; the merge then waits for them only);
# WAIT=1 waits for the merge and exits non-zero when it did not complete; sbatch's own variables apply to every job
# (SBATCH_PARTITION, SBATCH_ACCOUNT, SBATCH_TIMELIMIT, ...; per-task resources: SHARD_SBATCH="-c 4" or "--gres=gpu:1").
set -euo pipefail
cd "$(dirname "$0")/.."
usage="usage: slurm/submit.sh SCRIPT SHARDS [script options]   (e.g. slurm/submit.sh eval-carso 8 --out results/eval-carso)"
script=${1:?$usage}
shards=${2:?$usage}
shift 2
[ "${1:-}" = "--" ] && shift
script=${script%.cs}; script=${script#scripts/}
[ -f "scripts/$script.cs" ] || { echo "submit.sh: scripts/$script.cs not found; $usage" >&2; exit 2; }
[[ "$shards" =~ ^[1-9][0-9]*$ ]] || { echo "submit.sh: SHARDS must be a positive integer, got '$shards'; $usage" >&2; exit 2; }
array=${ARRAY:-0-$((shards - 1))}

echo "building scripts/$script.cs into artifacts/slurm/$script/ ..."
dotnet build "scripts/$script.cs" -o "artifacts/slurm/$script" -nologo -v quiet >/dev/null \
  || { echo "submit.sh: the build failed; run: dotnet build scripts/$script.cs" >&2; exit 1; }
mkdir -p artifacts/slurm/logs
# shellcheck disable=SC2086
shards_job=$(sbatch --parsable --array="$array" ${SHARD_SBATCH:-} --output="artifacts/slurm/logs/$script-%A_%a.out" \
  slurm/eval.sbatch "$script" "$shards" "$@")
shards_job=${shards_job%%;*}
merge_job=$(sbatch --parsable --dependency="afterok:$shards_job" --output="artifacts/slurm/logs/$script-merge-%j.out" \
  slurm/merge.sbatch "$script" "$@")
merge_job=${merge_job%%;*}
echo "shards: job $shards_job (array $array of $shards); merge: job $merge_job (after every shard ends well)"
echo "watch:  squeue -j $shards_job,$merge_job    logs: artifacts/slurm/logs/$script-${shards_job}_*.out, $script-merge-$merge_job.out"

if [ "${WAIT:-0}" = 1 ]; then
  while [ -n "$(squeue -h -j "$shards_job,$merge_job" -o %i 2>/dev/null)" ]; do
    if squeue -h -j "$merge_job" -o %r 2>/dev/null | grep -q DependencyNeverSatisfied; then
      scancel "$merge_job"
      echo "submit.sh: a shard failed (see artifacts/slurm/logs/$script-${shards_job}_*.out); the merge was cancelled" >&2
      exit 1
    fi
    sleep 2
  done
  state=$(scontrol show job "$merge_job" 2>/dev/null | grep -o 'JobState=[A-Z_]*' | cut -d= -f2 || true)
  echo "merge job $merge_job: ${state:-unknown}"
  [ "$state" = COMPLETED ] || exit 1
fi
