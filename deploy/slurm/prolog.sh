#!/usr/bin/env bash
# Slurm prolog (Prolog= in slurm.conf, runs as root on each node of the job): writes one
# mapping file per GPU of the job for gpu-carbon-exporter's mapping_dir mapper. The format
# ("jobid uid", files named by GPU index) is also what Princeton jobstats uses, and the
# first field alone is what dcgm-exporter's --hpc-job-mapping-dir reads.
#
# With GPU_CARBON_WORK_DIR set (attribution.work_dir), it also creates the job's units-of-work
# file, <dir>/<job id>, owned by the job's user in a directory only root writes: the job records
# its work there ("1200000 tokens", rewritten as it goes) and can declare no other job's
# (docs/report.md).
set -euo pipefail
dir="${GPU_CARBON_MAPPING_DIR:-/run/gpustat}"
if [ -n "${GPU_CARBON_WORK_DIR:-}" ] && [ -n "${SLURM_JOB_UID:-}" ]; then
  install -d -m 0755 "$GPU_CARBON_WORK_DIR"
  install -m 0644 -o "$SLURM_JOB_UID" /dev/null "$GPU_CARBON_WORK_DIR/$SLURM_JOB_ID"
fi
[ -n "${SLURM_JOB_GPUS:-}" ] || exit 0
mkdir -p "$dir"
IFS=',' read -ra gpus <<< "$SLURM_JOB_GPUS"
for gpu in "${gpus[@]}"; do
  tmp="$(mktemp "$dir/.${gpu}.XXXXXX")"
  printf '%s %s\n' "$SLURM_JOB_ID" "${SLURM_JOB_UID:-}" > "$tmp"
  chmod 0644 "$tmp"
  mv -f "$tmp" "$dir/$gpu"
done
