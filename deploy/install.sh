#!/usr/bin/env bash
# Install Amanat on a blank Debian 12 (bookworm) server, as root. Read docs/deploy.md first:
# full-disk encryption, swap and updates are set up before this script runs.
#
#   deploy/install.sh --org-pub org.pub --keyring keyring.json [--wheelhouse DIR]
#
# --org-pub/--keyring: the organization's public key and signed keyring, made on the offline
# machine that holds the organization key (`amanat keys ...`); the private key never comes here.
# --wheelhouse: install the Python packages from a folder of wheels instead of PyPI.
set -euo pipefail

SRC=$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)
PREFIX=/opt/amanat
ETC=/etc/amanat
DATA=/var/lib/amanat
ORG_PUB="" KEYRING="" WHEELHOUSE=""

while [ $# -gt 0 ]; do
    case "$1" in
        --org-pub) ORG_PUB=$2; shift 2 ;;
        --keyring) KEYRING=$2; shift 2 ;;
        --wheelhouse) WHEELHOUSE=$2; shift 2 ;;
        *) sed -n '5,11p' "$0"; exit 2 ;;
    esac
done
[ "$(id -u)" = 0 ] || { echo "install.sh: run as root" >&2; exit 1; }
[ -f "$ORG_PUB" ] && [ -f "$KEYRING" ] || { echo "install.sh: --org-pub and --keyring are required" >&2; exit 2; }

echo "== packages"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    tor python3 python3-venv unattended-upgrades apparmor-utils >/dev/null

echo "== user amanat (no login); tor joins its group to reach /run/amanat"
id amanat >/dev/null 2>&1 || adduser --system --group --home "$DATA" --no-create-home \
    --shell /usr/sbin/nologin amanat
adduser debian-tor amanat >/dev/null

echo "== application in $PREFIX"
install -d -m 0755 "$PREFIX"
[ -x "$PREFIX/venv/bin/python" ] || python3 -m venv "$PREFIX/venv"
if [ -n "$WHEELHOUSE" ]; then
    "$PREFIX/venv/bin/pip" install -q --no-index --find-links "$WHEELHOUSE" "amanat[server]"
else
    "$PREFIX/venv/bin/pip" install -q "$SRC[server]"
fi
install -d -m 0755 "$PREFIX/docs" && install -m 0644 "$SRC/docs/deploy.md" "$PREFIX/docs/"

echo "== configuration in $ETC, data in $DATA"
install -d -m 0750 -o root -g amanat "$ETC"
install -m 0640 -o root -g amanat "$ORG_PUB" "$ETC/org.pub"
install -m 0640 -o root -g amanat "$KEYRING" "$ETC/keyring.json"
[ -f "$ETC/amanat.toml" ] || install -m 0640 -o root -g amanat "$SRC/deploy/amanat.toml" "$ETC/"
install -d -m 0700 -o amanat -g amanat "$DATA"
if [ ! -f "$DATA/instance.salt" ]; then
    (umask 077; head -c 32 /dev/urandom > "$DATA/instance.salt")
    chown amanat:amanat "$DATA/instance.salt"
fi
[ -f "$DATA/transfer.key" ] || runuser -u amanat -- "$PREFIX/venv/bin/amanat" transfer init-key \
    --config "$ETC/amanat.toml"

echo "== tor: both onion services; the transfer onion requires client authorization from the start"
install -d -m 0700 -o debian-tor -g debian-tor /var/lib/tor/amanat-source \
    /var/lib/tor/amanat-transfer /var/lib/tor/amanat-transfer/authorized_clients
if [ -z "$(ls -A /var/lib/tor/amanat-transfer/authorized_clients)" ]; then
    # A key whose private half is thrown away: client auth is on before the first real client.
    "$PREFIX/venv/bin/python" -c 'from onion.client_auth import ClientKeyPair, auth_line
print(auth_line(ClientKeyPair.generate().public))' \
        > /var/lib/tor/amanat-transfer/authorized_clients/install-placeholder.auth
    chown debian-tor:debian-tor /var/lib/tor/amanat-transfer/authorized_clients/*.auth
    chmod 0600 /var/lib/tor/amanat-transfer/authorized_clients/*.auth
fi
[ -f /etc/tor/torrc.before-amanat ] || cp /etc/tor/torrc /etc/tor/torrc.before-amanat
install -m 0644 "$SRC/deploy/torrc" /etc/tor/torrc
tor --defaults-torrc /usr/share/tor/tor-service-defaults-torrc -f /etc/tor/torrc --verify-config >/dev/null
if [ -d /etc/apparmor.d/local ]; then
    # Debian's system_tor profile only lets tor reach its own sockets; add ours.
    grep -q amanat /etc/apparmor.d/local/system_tor 2>/dev/null || cat >> /etc/apparmor.d/local/system_tor <<'AA'
  # Amanat: the onion services' targets
  /run/amanat/ r,
  /run/amanat/*.sock rw,
AA
    command -v apparmor_parser >/dev/null && aa-enabled -q 2>/dev/null \
        && apparmor_parser -r /etc/apparmor.d/system_tor || true
fi

echo "== services"
install -m 0644 "$SRC/deploy/amanat.service" /etc/systemd/system/amanat.service
systemctl daemon-reload
systemctl enable -q --now tor@default.service
systemctl restart tor@default.service
systemctl enable -q --now amanat.service
for _ in $(seq 60); do [ -f /var/lib/tor/amanat-source/hostname ] && break; sleep 1; done

cat <<DONE

Amanat is installed.
  source onion:   http://$(cat /var/lib/tor/amanat-source/hostname 2>/dev/null || echo '(tor has not written it yet)')
  status:         $PREFIX/venv/bin/amanat onion status --config $ETC/amanat.toml
  investigators:  $PREFIX/venv/bin/amanat onion add-client NAME --config $ETC/amanat.toml
                  (as root; then: ... onion revoke-client install-placeholder --config ...)
  sandbox:        systemd-analyze security amanat.service
DONE
