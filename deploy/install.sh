#!/usr/bin/env bash
# Install or upgrade nightear as a systemd service on Raspberry Pi OS / Debian.
# Safe to run twice: an upgrade replaces the code and the unit, keeps the config and the data.
#
#   sudo deploy/install.sh                 # the whole machine
#   deploy/install.sh --root /tmp/scratch  # into a scratch root: no apt, user or systemctl
set -euo pipefail

ROOT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --root) ROOT="${2:?--root needs a folder}"; shift 2 ;;
    -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option $1" >&2; exit 2 ;;
  esac
done

SRC=$(cd "$(dirname "$0")/.." && pwd)
PREFIX="$ROOT/opt/nightear"
CONFIG_DIR="$ROOT/etc/nightear"
DATA="$ROOT/var/lib/nightear"
UNIT="$ROOT/etc/systemd/system/nightear.service"

if [ -z "$ROOT" ]; then
  [ "$(id -u)" -eq 0 ] || { echo "install.sh: run as root (sudo), or give --root DIR" >&2; exit 2; }
  apt-get update -q
  apt-get install -y -q python3-venv libportaudio2
  id nightear >/dev/null 2>&1 || useradd --system --home-dir /var/lib/nightear --no-create-home \
    --shell /usr/sbin/nologin --groups audio nightear
fi

mkdir -p "$PREFIX" "$CONFIG_DIR" "$DATA/metrics" "$(dirname "$UNIT")"
[ -x "$PREFIX/venv/bin/python" ] || python3 -m venv "$PREFIX/venv"
"$PREFIX/venv/bin/pip" install --quiet --upgrade "$SRC"

if [ ! -f "$CONFIG_DIR/config.yaml" ]; then
  # The example config, with the store and the metrics under /var/lib/nightear.
  sed -e '/^store:/,/^[a-z]/ s|^  path: null|  path: /var/lib/nightear/events.db|' \
      -e '/^metrics:/,/^[a-z]/ s|^  path: null|  path: /var/lib/nightear/metrics/nightear.prom|' \
      -e '/^clips:/,/^[a-z]/ s|^  folder: null|  folder: /var/lib/nightear/clips|' \
      "$SRC/deploy/config.example.yaml" > "$CONFIG_DIR/config.yaml"
  echo "install.sh: wrote $CONFIG_DIR/config.yaml: set audio.device and node for this unit"
else
  echo "install.sh: kept $CONFIG_DIR/config.yaml"
fi
install -m 0644 "$SRC/deploy/nightear.service" "$UNIT"

if [ -z "$ROOT" ]; then
  chown -R nightear:nightear "$DATA"
  chmod 0640 "$CONFIG_DIR/config.yaml" && chgrp nightear "$CONFIG_DIR/config.yaml"
  "$PREFIX/venv/bin/python" -m nightear check --config /etc/nightear/config.yaml || true
  systemctl daemon-reload
  systemctl enable nightear.service
  systemctl restart nightear.service
  echo "install.sh: nightear is running: journalctl -u nightear -f"
fi
