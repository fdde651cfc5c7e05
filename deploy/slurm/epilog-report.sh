#!/usr/bin/env bash
# Opt-in Slurm epilog (Epilog= in slurm.conf, after epilog.sh): writes the job's carbon report
# next to its output, as the job's user, when the job ends. It returns at once: everything runs
# detached, under time limits, so a slow slurmctld or a slow or down Prometheus never delays the
# epilog or the node. Of a multi-node job, only its first node writes the report. docs/report.md.
#
# Settings (environment of slurmd, or edit here):
#   GPU_CARBON_PROMETHEUS     Prometheus URL (required; unset: do nothing)
#   GPU_CARBON_CLUSTER        the `cluster` target label of this cluster's exporters, if any
#   GPU_CARBON_REPORT_DIR     write here instead of beside the job's output
#   GPU_CARBON_REPORT_DELAY   seconds to wait first (default 30: one scrape interval or more)
#   GPU_CARBON_REPORT_TIMEOUT seconds the report may take (default 120)
#   GPU_CARBON_EXPORTER       the gpu-carbon-exporter command (default: the systemd install's)
set -u
[ -n "${GPU_CARBON_PROMETHEUS:-}" ] && [ -n "${SLURM_JOB_ID:-}" ] && [ -n "${SLURM_JOB_UID:-}" ] || exit 0
as_user=()
if [ "$(id -u)" -eq 0 ]; then  # as the job's user: nothing is written where the user could not write
  as_user=(setpriv --reuid="$SLURM_JOB_UID" --regid="${SLURM_JOB_GID:-$SLURM_JOB_UID}" --clear-groups)
fi
export SLURM_JOB_ID SLURM_JOB_NODELIST="${SLURM_JOB_NODELIST:-}" GPU_CARBON_PROMETHEUS
export GPU_CARBON_CLUSTER="${GPU_CARBON_CLUSTER:-}" GPU_CARBON_REPORT_DIR="${GPU_CARBON_REPORT_DIR:-}"
export GPU_CARBON_REPORT_DELAY="${GPU_CARBON_REPORT_DELAY:-30}" GPU_CARBON_REPORT_TIMEOUT="${GPU_CARBON_REPORT_TIMEOUT:-120}"
export GPU_CARBON_EXPORTER="${GPU_CARBON_EXPORTER:-/opt/gpu-carbon-exporter/bin/gpu-carbon-exporter}"
setsid "${as_user[@]}" bash -c '
  set -u
  if [ -n "$SLURM_JOB_NODELIST" ]; then  # the first node of the job writes it, the others nothing
    first="$(timeout 10 scontrol show hostnames "$SLURM_JOB_NODELIST" 2>/dev/null | head -1)"
    [ -z "$first" ] || [ "$first" = "$(hostname -s)" ] || [ "$first" = "$(hostname)" ] || exit 0
  fi
  dir="$GPU_CARBON_REPORT_DIR"
  if [ -z "$dir" ]; then  # beside the job output, else in its working directory
    info="$(timeout 10 scontrol show job "$SLURM_JOB_ID" 2>/dev/null)"
    out="$(sed -n "s/.*StdOut=\([^ ]*\).*/\1/p" <<< "$info" | head -1)"
    dir="$(dirname "${out:-/nonexistent/x}")"
    [ -d "$dir" ] || dir="$(sed -n "s/.*WorkDir=\([^ ]*\).*/\1/p" <<< "$info" | head -1)"
  fi
  [ -n "$dir" ] && [ -d "$dir" ] && [ -w "$dir" ] || exit 0
  name="$dir/gpu-carbon-report-$SLURM_JOB_ID"
  work="$(mktemp -d "$dir/.gpu-carbon-report-$SLURM_JOB_ID.XXXXXX")" || exit 0
  trap "rm -rf \"\$work\"" EXIT
  sleep "$GPU_CARBON_REPORT_DELAY"
  cluster=()
  [ -z "$GPU_CARBON_CLUSTER" ] || cluster=(--cluster "$GPU_CARBON_CLUSTER")
  if timeout "$GPU_CARBON_REPORT_TIMEOUT" "$GPU_CARBON_EXPORTER" report "$SLURM_JOB_ID" \
      --prometheus "$GPU_CARBON_PROMETHEUS" "${cluster[@]}" --format markdown --out "$work/out" \
      > "$work/report.md" 2> "$work/err"; then
    mv -f "$work/out/report.html" "$name.html"
    mv -f "$work/out/report.json" "$name.json"
    mv -f "$work/report.md" "$name.md"  # last: its presence means the report is complete
  else
    [ -s "$work/err" ] || echo "no report within $GPU_CARBON_REPORT_TIMEOUT s (GPU_CARBON_REPORT_TIMEOUT)" > "$work/err"
    mv -f "$work/err" "$name.err"  # why there is no report, for the user
  fi
' < /dev/null > /dev/null 2>&1 &
exit 0
