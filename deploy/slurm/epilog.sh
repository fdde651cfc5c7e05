#!/usr/bin/env bash
# Slurm epilog: removes the mapping files the prolog wrote, only if they still name this job.
set -euo pipefail
dir="${GPU_CARBON_MAPPING_DIR:-/run/gpustat}"
# The units-of-work file goes after the exporter's linger time (it keeps the last count it read;
# removing the file at once would lose nothing, but a late rewrite by the job would be missed).
if [ -n "${GPU_CARBON_WORK_DIR:-}" ]; then
  find "$GPU_CARBON_WORK_DIR" -maxdepth 1 -type f -mmin +60 -delete 2>/dev/null || true
fi
[ -n "${SLURM_JOB_GPUS:-}" ] || exit 0
IFS=',' read -ra gpus <<< "$SLURM_JOB_GPUS"
for gpu in "${gpus[@]}"; do
  f="$dir/$gpu"
  if [ -f "$f" ] && [ "$(cut -d' ' -f1 "$f")" = "$SLURM_JOB_ID" ]; then
    rm -f "$f"
  fi
done
