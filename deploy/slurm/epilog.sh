#!/usr/bin/env bash
# Slurm epilog: removes the mapping files the prolog wrote, only if they still name this job.
set -euo pipefail
dir="${GPU_CARBON_MAPPING_DIR:-/run/gpustat}"
[ -n "${SLURM_JOB_GPUS:-}" ] || exit 0
IFS=',' read -ra gpus <<< "$SLURM_JOB_GPUS"
for gpu in "${gpus[@]}"; do
  f="$dir/$gpu"
  if [ -f "$f" ] && [ "$(cut -d' ' -f1 "$f")" = "$SLURM_JOB_ID" ]; then
    rm -f "$f"
  fi
done
