#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh machine, then runs it.
# Usage: scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages: Prometheus, promtool and Alertmanager for the end-to-end and rule tests, gcc to build
# the simulated libnvidia-ml.so.1, setpriv (util-linux) for the RAPL permission test, systemd-analyze
# and kubectl (kustomize) for the deployment tests, VictoriaMetrics and vmalert for the rules on it,
# Chromium for the HTML report (driven by Playwright from PyPI, which uses this browser, downloads none).
missing=()
command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v prometheus-alertmanager >/dev/null 2>&1 || missing+=(prometheus-alertmanager)
command -v gcc >/dev/null 2>&1 || missing+=(gcc libc6-dev)
command -v setpriv >/dev/null 2>&1 || missing+=(util-linux)
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
command -v kubectl >/dev/null 2>&1 || missing+=(kubectl)
command -v vmalert >/dev/null 2>&1 || missing+=(victoria-metrics)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing ${missing[*]} (Debian packages)" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Always a project virtual environment: never install into the interpreter of the system (or of
# whoever runs this as root), whether or not it is marked externally managed (PEP 668).
[ -x .venv/bin/python ] || python3 -m venv .venv
PY=.venv/bin/python
"$PY" -m pip install -q --disable-pip-version-check -e ".[test]"
# The linter first (ruff, configured in pyproject.toml): a style error fails the run before the tests start.
"$PY" -m ruff check --quiet .
# Three workers, a test file each at a time (pytest-xdist), the slowest files first (tests/conftest.py):
# the end-to-end tests mostly wait on real time (scrapes, rule evaluations, outages), so they run side by
# side with the CPU-bound ones even on this project's 2-core machine. PYTEST_WORKERS=0 runs it in one process.
exec "$PY" -m pytest -n "${PYTEST_WORKERS:-3}" --dist loadfile "$@"
