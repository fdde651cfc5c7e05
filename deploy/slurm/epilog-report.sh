#!/usr/bin/env bash
# Opt-in Slurm epilog (Epilog= in slurm.conf, after epilog.sh): writes the job's carbon report
# next to its output, as the job's user, when the job ends. It returns at once: the report runs
# detached, after one scrape interval (so Prometheus has the job's last samples), under a time
# limit, so a slow or down Prometheus never delays the epilog or the node. docs/report.md.
#
# Settings (environment of slurmd, or edit here):
#   GPU_CARBON_PROMETHEUS     Prometheus URL (required; unset: do nothing)
#   GPU_CARBON_REPORT_DIR     write here instead of beside the job's output
#   GPU_CARBON_REPORT_DELAY   seconds to wait first (default 30, one scrape interval or more)
#   GPU_CARBON_REPORT_TIMEOUT seconds the report may take (default 120)
#   GPU_CARBON_EXPORTER       the gpu-carbon-exporter command (default: the systemd install's)
set -u
[ -n "${GPU_CARBON_PROMETHEUS:-}" ] && [ -n "${SLURM_JOB_ID:-}" ] || exit 0
exe="${GPU_CARBON_EXPORTER:-/opt/gpu-carbon-exporter/bin/gpu-carbon-exporter}"
delay="${GPU_CARBON_REPORT_DELAY:-30}"
limit="${GPU_CARBON_REPORT_TIMEOUT:-120}"
uid="${SLURM_JOB_UID:-$(id -u)}"
gid="${SLURM_JOB_GID:-$(id -g "$uid" 2>/dev/null || echo "$uid")}"
dir="${GPU_CARBON_REPORT_DIR:-}"
if [ -z "$dir" ]; then  # beside the job's output, else its working directory (asked now: soon forgotten)
  info="$(scontrol show job "$SLURM_JOB_ID" 2>/dev/null || true)"
  out="$(sed -n 's/.*StdOut=\([^ ]*\).*/\1/p' <<< "$info" | head -1)"
  dir="$(dirname "${out:-/nonexistent/x}")"
  [ -d "$dir" ] || dir="$(sed -n 's/.*WorkDir=\([^ ]*\).*/\1/p' <<< "$info" | head -1)"
fi
[ -n "$dir" ] && [ -d "$dir" ] || exit 0
name="$dir/gpu-carbon-report-$SLURM_JOB_ID"
# As the job's user, so nothing is written where the user could not write; detached from the epilog.
as_user=()
[ "$(id -u)" -ne 0 ] || as_user=(setpriv --reuid="$uid" --regid="$gid" --clear-groups)
setsid "${as_user[@]}" bash -c '
  sleep "$1"
  if ! timeout "$2" "$3" report "$4" --prometheus "$5" --format markdown --out "$6.d" > "$6.tmp" 2> "$6.err.tmp"; then
    [ -s "$6.err.tmp" ] || echo "no report within $2 s (GPU_CARBON_REPORT_TIMEOUT)" > "$6.err.tmp"
    mv -f "$6.err.tmp" "$6.err"  # why there is no report, for the user
    rm -rf "$6.tmp" "$6.d"
    exit 0
  fi
  mv -f "$6.d/report.html" "$6.html" && mv -f "$6.d/report.json" "$6.json" && mv -f "$6.tmp" "$6.md"
  rm -rf "$6.d" "$6.err.tmp"
' epilog-report "$delay" "$limit" "$exe" "$SLURM_JOB_ID" "$GPU_CARBON_PROMETHEUS" "$name" \
  < /dev/null > /dev/null 2>&1 &
exit 0
