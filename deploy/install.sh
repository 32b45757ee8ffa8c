#!/usr/bin/env bash
# Install or upgrade nightear as a systemd service on Raspberry Pi OS / Debian.
# Safe to run twice: an upgrade replaces the code and the unit, keeps the config and the data.
#
#   sudo deploy/install.sh                 # the whole machine
#   deploy/install.sh --root /tmp/scratch  # into a scratch root: no apt, user or systemctl
#
# It ends with `nightear check` as the service user: a config, model, store, clips or metrics
# path or a microphone that `listen` could not use stops the install, naming what to fix.
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

# Recordings of the night are private: data 0750/0640 (the service's UMask=0027 too), except
# that node_exporter's group may read the metrics folder (setgid, so new files keep the group).
METRICS_GROUP=nightear
for group in prometheus node-exporter node_exporter; do
  if getent group "$group" >/dev/null; then METRICS_GROUP=$group; break; fi
done
mkdir -p "$PREFIX" "$CONFIG_DIR" "$(dirname "$UNIT")"
install -d -m 0751 "$DATA"  # others may pass through to metrics/, never list or read the rest
install -d -m 2750 "$DATA/metrics"
[ -x "$PREFIX/venv/bin/python" ] || python3 -m venv "$PREFIX/venv"
"$PREFIX/venv/bin/pip" install --quiet --upgrade "$SRC"

CONFIG="$CONFIG_DIR/config.yaml"
if [ ! -f "$CONFIG" ]; then
  # The example config, with the store, clips and metrics under /var/lib/nightear, created
  # 0640 from its first byte (it may name the broker's password).
  (umask 0027 && sed -e "/^store:/,/^[a-z]/ s|^  path: null|  path: $DATA/events.db|" \
      -e "/^metrics:/,/^[a-z]/ s|^  path: null|  path: $DATA/metrics/nightear.prom|" \
      -e "/^clips:/,/^[a-z]/ s|^  folder: null|  folder: $DATA/clips|" \
      "$SRC/deploy/config.example.yaml" > "$CONFIG.new")
  [ -n "$ROOT" ] || chgrp nightear "$CONFIG.new"
  mv "$CONFIG.new" "$CONFIG"
  echo "install.sh: wrote $CONFIG: set audio.device and node for this unit"
else
  echo "install.sh: kept $CONFIG"
fi
install -m 0644 "$SRC/deploy/nightear.service" "$UNIT"

# A network sink (mqtt.brokers set) needs IP sockets, which the unit denies: a drop-in allows them.
DROPIN="$UNIT.d/network.conf"
if "$PREFIX/venv/bin/python" -c 'import sys; from nightear.config import load_settings
sys.exit(0 if load_settings(sys.argv[1]).mqtt.enabled else 1)' \
    "$CONFIG" 2>/dev/null; then
  install -D -m 0644 "$SRC/deploy/network.conf" "$DROPIN"
  echo "install.sh: wrote $DROPIN: the MQTT sink may use IP sockets"
else
  rm -f "$DROPIN"
fi

if [ -z "$ROOT" ]; then
  chown nightear:nightear "$DATA"
  chown -R "nightear:$METRICS_GROUP" "$DATA/metrics"
  find "$DATA" -mindepth 1 -maxdepth 1 ! -name metrics -exec chown -R nightear:nightear {} +
  CHECK=(runuser -u nightear -- "$PREFIX/venv/bin/python" -m nightear check --config "$CONFIG")
else
  CHECK=("$PREFIX/venv/bin/python" -m nightear check --config "$CONFIG")
fi
if ! "${CHECK[@]}"; then
  echo "install.sh: nightear check failed (the lines above name what); fix it and run install.sh again" >&2
  exit 1
fi

if [ -z "$ROOT" ]; then
  systemctl daemon-reload
  systemctl enable nightear.service
  systemctl restart nightear.service
  echo "install.sh: nightear is running: journalctl -u nightear -f"
fi
