# Shared by scripts/up, scripts/test and .ci/run: make sure the services Mailroom needs are up
# on this machine, starting (and installing) what is missing. Sourced, not run.

MOTO_PORT="${MOTO_PORT:-5005}"
export MOTO_URL="${MOTO_URL:-http://127.0.0.1:${MOTO_PORT}}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUN_DIR="$ROOT/.run"
mkdir -p "$RUN_DIR"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() { # port seconds what
  local i
  for ((i = 0; i < $2 * 10; i++)); do
    port_open "$1" && return 0
    sleep 0.1
  done
  die "$3 did not come up on 127.0.0.1:$1 within $2 s"
}

# Installs Debian packages (as root, or through sudo), saying what it installs.
install_debian_packages() {
  command -v apt-get >/dev/null || die "please install: $* (no apt-get on this machine)"
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || die "installing $* needs root or sudo"
    sudo="sudo"
  fi
  say "installing $* (apt-get)"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null \
    || { $sudo apt-get update -q >/dev/null \
      && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null; } \
    || die "could not install $*"
}

ensure_postgres() {
  if ! port_open 5432; then
    say "starting PostgreSQL"
    command -v pg_ctlcluster >/dev/null || die "PostgreSQL is not installed (apt-get install postgresql)"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
    wait_port 5432 30 PostgreSQL
  fi
}

ensure_rabbitmq() {
  if ! port_open 5672; then
    say "starting RabbitMQ"
    command -v rabbitmq-server >/dev/null || die "RabbitMQ is not installed (apt-get install rabbitmq-server)"
    rabbitmq-server -detached
    wait_port 5672 60 RabbitMQ
  fi
}

# The management plugin gives the dashboard queue details; enabling it is idempotent.
ensure_rabbitmq_management() {
  if ! port_open 15672 && command -v rabbitmq-plugins >/dev/null; then
    say "enabling the RabbitMQ management plugin"
    rabbitmq-plugins enable --quiet rabbitmq_management >/dev/null 2>&1 || true
    wait_port 15672 30 "RabbitMQ management" || true
  fi
}

ensure_moto_installed() {
  if ! python3 -c 'import moto.server, flask, flask_cors' 2>/dev/null; then
    say "installing moto[server] (the SES stand-in) from PyPI"
    python3 -m pip install --quiet --disable-pip-version-check 'moto[server]>=5,<6' \
      || die "could not install moto[server]"
  fi
}

ensure_moto() {
  if port_open "$MOTO_PORT"; then return 0; fi
  ensure_moto_installed
  say "starting moto (SES stand-in) on 127.0.0.1:$MOTO_PORT"
  nohup python3 -m moto.server -H 127.0.0.1 -p "$MOTO_PORT" >"$RUN_DIR/moto.log" 2>&1 &
  echo $! >"$RUN_DIR/moto.pid"
  wait_port "$MOTO_PORT" 60 moto
}

# A moto of this run's own, on a free port, stopped when the calling script exits. The tests
# use it rather than whatever answers on $MOTO_PORT: a moto left running by `scripts/up` or an
# earlier session can hold thousands of messages and a hundred identities, which slows every
# poll of /moto-api/data.json and breaks ListEmailIdentities.
start_private_moto() {
  ensure_moto_installed
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  say "starting a private moto (SES stand-in) for this run on 127.0.0.1:$port"
  python3 -m moto.server -H 127.0.0.1 -p "$port" >"$RUN_DIR/moto-test.log" 2>&1 </dev/null &
  PRIVATE_MOTO_PID=$!
  trap 'kill "$PRIVATE_MOTO_PID" 2>/dev/null || true' EXIT
  wait_port "$port" 60 moto
  export MOTO_URL="http://127.0.0.1:$port"
}

ensure_services() {
  ensure_postgres
  ensure_rabbitmq
  ensure_moto
}
