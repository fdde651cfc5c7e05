#!/usr/bin/env bash
# The local stack in one command, from a checkout, without Docker: installs Prometheus and
# Alertmanager (Debian packages) and the project (into .venv) where missing, then runs
# `gpu-carbon-exporter stack`: simulated exporters, Prometheus with the generated rules,
# Alertmanager, and Grafana if it is installed. It prints the URLs; Ctrl-C stops everything.
# Arguments go to `gpu-carbon-exporter stack` (see --help).
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
command -v prometheus-alertmanager >/dev/null 2>&1 || command -v alertmanager >/dev/null 2>&1 \
  || missing+=(prometheus-alertmanager)
if [ "${#missing[@]}" -gt 0 ]; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "local-stack.sh: install ${missing[*]} (or use: docker compose -f deploy/compose/compose.yaml up)" >&2
    exit 1
  fi
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -c 'import gpu_carbon_exporter' 2>/dev/null \
  || .venv/bin/python -m pip install -q --disable-pip-version-check -e .
exec .venv/bin/gpu-carbon-exporter stack "$@"
