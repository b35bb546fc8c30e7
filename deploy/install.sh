#!/usr/bin/env bash
# Install MedLedger as a systemd service on a Debian host (run as root):
#   deploy/install.sh            # single node: medledger.service
# Then put the node's files from `medledger init-consortium` (config.toml, keys,
# genesis.block) into /etc/medledger/ and `systemctl enable --now medledger`.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "install.sh: run as root" >&2; exit 2; }
command -v python3 >/dev/null || { apt-get update -qq && apt-get install -y -qq python3 python3-venv; }
id medledger >/dev/null 2>&1 || useradd --system --home-dir /var/lib/medledger \
  --shell /usr/sbin/nologin medledger
install -d -m 0755 /opt/medledger
[ -x /opt/medledger/venv/bin/python ] || python3 -m venv /opt/medledger/venv
/opt/medledger/venv/bin/pip install -q --disable-pip-version-check .
cp -r docs /opt/medledger/
install -m 0644 deploy/medledger.service deploy/medledger@.service /etc/systemd/system/
install -d -m 0750 -o root -g medledger /etc/medledger
[ -f /etc/medledger/config.toml ] || install -m 0640 -o root -g medledger \
  deploy/config.example.toml /etc/medledger/config.toml
systemctl daemon-reload 2>/dev/null || true
echo "installed; edit /etc/medledger/config.toml, then: systemctl enable --now medledger"
