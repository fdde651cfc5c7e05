#!/usr/bin/env bash
# Slurm prolog (Prolog= in slurm.conf, runs as root on each node of the job): writes one
# mapping file per GPU of the job for gpu-carbon-exporter's mapping_dir mapper. The format
# ("jobid uid", files named by GPU index) is also what Princeton jobstats uses, and the
# first field alone is what dcgm-exporter's --hpc-job-mapping-dir reads.
set -euo pipefail
dir="${GPU_CARBON_MAPPING_DIR:-/run/gpustat}"
[ -n "${SLURM_JOB_GPUS:-}" ] || exit 0
mkdir -p "$dir"
IFS=',' read -ra gpus <<< "$SLURM_JOB_GPUS"
for gpu in "${gpus[@]}"; do
  tmp="$(mktemp "$dir/.${gpu}.XXXXXX")"
  printf '%s %s\n' "$SLURM_JOB_ID" "${SLURM_JOB_UID:-}" > "$tmp"
  chmod 0644 "$tmp"
  mv -f "$tmp" "$dir/$gpu"
done
