#!/usr/bin/env bash
# Slurm epilog: removes the mapping files the prolog wrote, only if they still name this job.
set -euo pipefail
dir="${GPU_CARBON_MAPPING_DIR:-/run/gpustat}"
# The job's units-of-work file goes once the exporter has read it a last time (every 5 s; it keeps
# the largest count it read): removed 30 s later, detached, so the epilog does not wait.
if [ -n "${GPU_CARBON_WORK_DIR:-}" ] && [ -n "${SLURM_JOB_ID:-}" ]; then
  setsid bash -c 'sleep 30; rm -f "$0"' "$GPU_CARBON_WORK_DIR/$SLURM_JOB_ID" < /dev/null > /dev/null 2>&1 &
fi
[ -n "${SLURM_JOB_GPUS:-}" ] || exit 0
IFS=',' read -ra gpus <<< "$SLURM_JOB_GPUS"
for gpu in "${gpus[@]}"; do
  f="$dir/$gpu"
  if [ -f "$f" ] && [ "$(cut -d' ' -f1 "$f")" = "$SLURM_JOB_ID" ]; then
    rm -f "$f"
  fi
done
