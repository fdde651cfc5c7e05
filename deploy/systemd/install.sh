#!/bin/sh
# Installs gpu-carbon-exporter as a systemd service on a stock Debian 12 / Ubuntu 24.04 host,
# where `sudo pip install .` is refused (PEP 668): a virtual environment of its own under
# $PREFIX, the hardened unit pointing at it, the example config if none is there, then
# `systemctl enable --now`. Run as root from a checkout: sudo deploy/systemd/install.sh
# Upgrading: run it again from the new checkout; the state in /var/lib/gpu-carbon-exporter and
# an existing config are kept. Variables (for packaging and the tests):
#   PREFIX=/opt/gpu-carbon-exporter  UNIT_DIR=/etc/systemd/system  CONFIG_DIR=/etc/gpu-carbon-exporter
#   DROPINS="rapl attribution"  (drop-ins to install)   START=no  (install only)
set -eu
PREFIX=${PREFIX:-/opt/gpu-carbon-exporter}
UNIT_DIR=${UNIT_DIR:-/etc/systemd/system}
CONFIG_DIR=${CONFIG_DIR:-/etc/gpu-carbon-exporter}
DROPINS=${DROPINS:-}
START=${START:-yes}
PYTHON=${PYTHON:-python3}
HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$(cd "$HERE/../.." && pwd)

if ! "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null; then
  echo "install.sh: $PYTHON cannot make virtual environments; on Debian/Ubuntu: apt-get install python3-venv" >&2
  exit 1
fi
[ -x "$PREFIX/bin/python" ] || "$PYTHON" -m venv "$PREFIX"
# Built from a copy: pip builds in the source tree, and a stale build/ there could bring back
# modules an upgrade removed.
build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT
cp -R "$SRC/pyproject.toml" "$SRC/README.md" "$SRC/exporter" "$build/"
"$PREFIX/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade "$build"
"$PREFIX/bin/gpu-carbon-exporter" --version

mkdir -p "$UNIT_DIR" "$CONFIG_DIR"
sed "s|/opt/gpu-carbon-exporter/bin/|$PREFIX/bin/|; s|/etc/gpu-carbon-exporter/|$CONFIG_DIR/|" \
  "$HERE/gpu-carbon-exporter.service" > "$UNIT_DIR/gpu-carbon-exporter.service"
for name in $DROPINS; do
  mkdir -p "$UNIT_DIR/gpu-carbon-exporter.service.d"
  cp "$HERE/dropins/$name.conf" "$UNIT_DIR/gpu-carbon-exporter.service.d/$name.conf"
done
if [ ! -e "$CONFIG_DIR/gpu-carbon-exporter.yml" ]; then
  cp "$SRC/deploy/config/gpu-carbon-exporter.yml" "$CONFIG_DIR/gpu-carbon-exporter.yml"
fi
"$PREFIX/bin/gpu-carbon-exporter" check-config "$CONFIG_DIR/gpu-carbon-exporter.yml"

if [ "$START" = yes ] && command -v systemctl >/dev/null 2>&1; then
  systemctl daemon-reload
  systemctl enable --now gpu-carbon-exporter.service
  systemctl restart gpu-carbon-exporter.service
  echo "gpu-carbon-exporter is running: curl -s localhost:9842/metrics | head"
else
  echo "installed (not started): systemctl daemon-reload && systemctl enable --now gpu-carbon-exporter"
fi
