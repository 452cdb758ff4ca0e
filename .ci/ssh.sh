#!/usr/bin/env bash
# mcp-tower-ssh against a real OpenSSH server.
#
#   bash .ci/ssh.sh            # the interop tests (exec, RSA and ed25519 keys, output cap and
#                              # timeout, 11 parallel execs under MaxSessions 10 → 2 connections,
#                              # SFTP 1 MB round trip with checksum, sshd restart → recovery,
#                              # 64 concurrent 15 MiB downloads → capped or busy under a memory bound,
#                              # errors without address, user or paths)
#   bash .ci/ssh.sh bench ARGS # the `ssh` criterion bench against this sshd (ARGS go to criterion,
#                              # e.g. `bash .ci/ssh.sh bench --quick`)
#
# Installs openssh-server and openssh-client with apt-get if they are missing (as root),
# generates a host key and client keys under .ci/work/ssh/, creates (as root, if needed) a plain
# user with /bin/sh as its shell and no profile (a heavy .bashrc would dominate every exec),
# starts `sshd -D -f <config>` as a plain process on 127.0.0.1 on a high port, and stops it (and
# every connection) on exit. Environment: MCP_TOWER_SSH_PORT (default 42222),
# MCP_TOWER_SSH_USER (default mcp-ssh as root, the current user otherwise).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORK="$ROOT/.ci/work/ssh"
MODE="${1:-test}"
[ $# -gt 0 ] && shift
PORT="${MCP_TOWER_SSH_PORT:-42222}"
SSHD=/usr/sbin/sshd

if [ "$(id -u)" = 0 ]; then
  SSH_USER="${MCP_TOWER_SSH_USER:-mcp-ssh}"
else
  SSH_USER="${MCP_TOWER_SSH_USER:-$(id -un)}"
fi

# pgrep/pkill (procps): stopping sshd's connections, and the interop test that checks no
# command is left running.
if [ ! -x "$SSHD" ] || ! command -v ssh >/dev/null || ! command -v ssh-keygen >/dev/null \
  || ! command -v pkill >/dev/null; then
  if [ "$(id -u)" != 0 ]; then
    echo "ssh.sh: openssh-server, openssh-client and procps are needed (apt-get install openssh-server openssh-client procps)" >&2
    exit 1
  fi
  echo "=== installing openssh-server, openssh-client and procps"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    openssh-server openssh-client procps >/dev/null
fi

mkdir -p "$WORK"
chmod 755 "$WORK"
for key in host_ed25519:ed25519 id_ed25519:ed25519 id_rsa:rsa; do
  file="$WORK/${key%%:*}"
  [ -f "$file" ] || ssh-keygen -q -t "${key##*:}" -N '' -C "mcp-tower-ci" -f "$file"
done

if [ "$(id -u)" = 0 ]; then
  if ! id "$SSH_USER" >/dev/null 2>&1; then
    # A plain user: dash as its shell and an empty home, so an exec costs what sshd costs.
    useradd --create-home --shell /bin/sh "$SSH_USER"
  fi
  # useradd leaves the account locked (`!`), and sshd refuses locked accounts even for keys:
  # `*` is "no password" without the lock.
  if [ "$(getent shadow "$SSH_USER" | cut -d: -f2)" = '!' ]; then
    usermod -p '*' "$SSH_USER"
  fi
  mkdir -p /run/sshd   # sshd's privilege-separation directory
fi
USER_HOME=$(getent passwd "$SSH_USER" | cut -d: -f6)
# The keys the user may log in with. sshd reads the file as that user, so as root it goes in
# the user's home: the checkout may sit under a directory only root can enter (mktemp -d).
# One file per checkout: two checkouts on one machine must not replace each other's keys.
if [ "$(id -u)" = 0 ]; then
  KEYS_DIR="$USER_HOME/.mcp-tower-ci/$(printf '%s' "$WORK" | sha256sum | cut -c1-16)"
  mkdir -p "$KEYS_DIR"
  chmod 755 "$USER_HOME/.mcp-tower-ci" "$KEYS_DIR"
  AUTHORIZED_KEYS="$KEYS_DIR/authorized_keys"
else
  AUTHORIZED_KEYS="$WORK/authorized_keys"
fi
cat "$WORK/id_ed25519.pub" "$WORK/id_rsa.pub" >"$AUTHORIZED_KEYS"
chmod 644 "$AUTHORIZED_KEYS"
# The client key files are read by the tests (this user); keep them private.
chmod 600 "$WORK/id_ed25519" "$WORK/id_rsa"

cat >"$WORK/sshd_config" <<CONF
Port $PORT
ListenAddress 127.0.0.1
HostKey $WORK/host_ed25519
PidFile $WORK/sshd.pid
AuthorizedKeysFile $AUTHORIZED_KEYS
StrictModes no
AllowUsers $SSH_USER
PermitRootLogin no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
UseDNS no
PrintMotd no
PermitUserEnvironment no
# Channels at once on one connection: OpenSSH's default, set explicitly (the client opens
# another connection rather than ask for an 11th).
MaxSessions 10
MaxStartups 200:30:400
Subsystem sftp internal-sftp
LogLevel ERROR
CONF
echo "[127.0.0.1]:$PORT $(cut -d' ' -f1,2 "$WORK/host_ed25519.pub")" >"$WORK/known_hosts"

# start / stop / restart of sshd as a plain background process; its pid in sshd.main.pid.
cat >"$WORK/sshd-ctl.sh" <<CTL
#!/usr/bin/env bash
set -euo pipefail
stop() {
  [ -f "$WORK/sshd.main.pid" ] || return 0
  pid=\$(cat "$WORK/sshd.main.pid")
  rm -f "$WORK/sshd.main.pid"
  # The per-connection sshd processes first (children of the listener), then the listener:
  # every connection dies, as in a machine restart.
  pkill -TERM -P "\$pid" 2>/dev/null || true
  kill -TERM "\$pid" 2>/dev/null || true
  for _ in \$(seq 1 100); do kill -0 "\$pid" 2>/dev/null || return 0; sleep 0.05; done
  kill -KILL "\$pid" 2>/dev/null || true
}
start() {
  "$SSHD" -D -e -f "$WORK/sshd_config" >>"$WORK/sshd.log" 2>&1 &
  echo \$! >"$WORK/sshd.main.pid"
  for _ in \$(seq 1 100); do
    (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && return 0
    sleep 0.05
  done
  echo "sshd did not start listening on 127.0.0.1:$PORT:" >&2; cat "$WORK/sshd.log" >&2; return 1
}
case "\${1:-}" in
  start) start ;;
  stop) stop ;;
  restart) stop; start ;;
  *) echo "usage: \$0 start|stop|restart" >&2; exit 2 ;;
esac
CTL
chmod +x "$WORK/sshd-ctl.sh"

"$SSHD" -t -f "$WORK/sshd_config"
: >"$WORK/sshd.log"
trap '"$WORK/sshd-ctl.sh" stop' EXIT
"$WORK/sshd-ctl.sh" start
echo "=== sshd (OpenSSH $("$SSHD" -V 2>&1 | head -n1 | sed 's/^OpenSSH_//; s/,.*//')) on 127.0.0.1:$PORT, user $SSH_USER (shell $(getent passwd "$SSH_USER" | cut -d: -f7), home $USER_HOME)"

export MCP_TOWER_SSH_PORT="$PORT"
export MCP_TOWER_SSH_USER="$SSH_USER"
export MCP_TOWER_SSH_KEY="$WORK/id_ed25519"
export MCP_TOWER_SSH_RSA_KEY="$WORK/id_rsa"
export MCP_TOWER_SSH_KNOWN_HOSTS="$WORK/known_hosts"
export MCP_TOWER_SSH_RESTART="$WORK/sshd-ctl.sh restart"
# For `cargo xtask bench` later: the bench starts sshd with sshd-ctl.sh and reads this.
env | grep '^MCP_TOWER_SSH_' | sed 's/^/export /' >"$WORK/env"

case "$MODE" in
  test)
    echo "=== interop tests against OpenSSH"
    # One at a time: one of them restarts sshd.
    cargo test -p mcp-tower-ssh --test openssh -- --ignored --test-threads=1
    ;;
  bench)
    echo "=== ssh bench against OpenSSH"
    cargo bench -p mcp-tower-benches --bench ssh -- "$@"
    ;;
  *)
    echo "usage: $0 [test | bench [criterion args]]" >&2
    exit 2
    ;;
esac
