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

# On macOS, Homebrew installs and starts services.
on_macos() { [ "$(uname -s)" = Darwin ]; }

brew_install() { # formula
  command -v brew >/dev/null || die "please install $1 (Homebrew is not installed)"
  say "installing $1 (Homebrew)"
  brew install "$1" >/dev/null || die "could not install $1"
  brew services start "$1" >/dev/null || die "could not start $1"
}

ensure_postgres() {
  if port_open 5432; then return 0; fi
  if on_macos; then
    command -v postgres >/dev/null || brew_install postgresql@16
    brew services start postgresql@16 >/dev/null 2>&1 || true
    wait_port 5432 60 PostgreSQL
    # Homebrew's cluster belongs to the user who installed it; the URLs name `postgres`.
    psql -h 127.0.0.1 -d postgres -qAtX -c "SELECT 1 FROM pg_roles WHERE rolname = 'postgres'" | grep -q 1 \
      || psql -h 127.0.0.1 -d postgres -qc "CREATE ROLE postgres SUPERUSER LOGIN" >/dev/null
    return 0
  fi
  local installed=""
  if ! command -v pg_ctlcluster >/dev/null || [ -z "$(ls /etc/postgresql 2>/dev/null)" ]; then
    install_debian_packages postgresql
    installed=1
  fi
  local version
  version="$(ls /etc/postgresql | sort -V | tail -n1)"
  if [ -n "$installed" ]; then
    # A cluster this script just installed: let the local development URL
    # (postgres://postgres@127.0.0.1) in without a password, as compose.yaml's does. Only
    # loopback, and only on a cluster nobody had configured before.
    local hba="/etc/postgresql/$version/main/pg_hba.conf"
    if ! grep -q '^host all postgres 127.0.0.1/32 trust' "$hba"; then
      say "letting postgres@127.0.0.1 in without a password (local development; $hba)"
      sed -i '1i host all postgres 127.0.0.1/32 trust\nhost all postgres ::1/128 trust' "$hba"
    fi
  fi
  say "starting PostgreSQL $version"
  pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null \
    || pg_ctlcluster --skip-systemctl-redirect "$version" main restart
  wait_port 5432 30 PostgreSQL
}

# RabbitMQ 3.10 can lose the supervisor of quorum queues' at-least-once dead-lettering
# (`rabbit_fifo_dlx_sup`) after many queues are created and deleted in quick succession, as a
# test run does; from then on every new work queue fails with INTERNAL_ERROR until the broker
# restarts. A local broker in that state is restarted (said so), instead of failing every test.
ensure_rabbitmq_healthy() {
  command -v rabbitmqctl >/dev/null || return 0
  local sup
  sup=$(rabbitmqctl eval 'whereis(rabbit_fifo_dlx_sup).' 2>/dev/null) || return 0
  if [ "$sup" = "undefined" ]; then
    say "RabbitMQ lost its dead-lettering supervisor (a 3.10 bug); restarting it"
    rabbitmqctl stop >/dev/null 2>&1 || true
    local i
    for ((i = 0; i < 100; i++)); do port_open 5672 || break; sleep 0.1; done
    RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="${RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS:-} $MANAGEMENT_ERL_ARGS" \
      rabbitmq-server -detached
    wait_port 5672 90 RabbitMQ
    rabbitmqctl await_startup >/dev/null 2>&1 || true
  fi
}

ensure_rabbitmq() {
  if port_open 5672; then ensure_rabbitmq_healthy; return 0; fi
  if on_macos; then
    command -v rabbitmq-server >/dev/null || brew_install rabbitmq
    brew services start rabbitmq >/dev/null 2>&1 || true
    wait_port 5672 90 RabbitMQ
    return 0
  fi
  command -v rabbitmq-server >/dev/null || install_debian_packages rabbitmq-server
  say "starting RabbitMQ"
  # The package may have started it already (where there is an init system).
  port_open 5672 || RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="${RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS:-} $MANAGEMENT_ERL_ARGS" \
    rabbitmq-server -detached
  wait_port 5672 90 RabbitMQ
}

# RabbitMQ's management plugin: queue details for the dashboard, and policies and queue lists
# for the tests. Out of the box it listens on every interface (0.0.0.0:15672; RabbitMQ lets
# guest/guest in from loopback only, but the API and any other user are on the network), so
# these scripts keep it on 127.0.0.1. Set in the running broker, without editing anything under
# /etc/rabbitmq:
# - not enabled: its listener is set to 127.0.0.1 and the plugin enabled (which RabbitMQ keeps
#   in its enabled_plugins file); recorded in .run/, and `scripts/down` turns it off again;
# - enabled on every interface (by someone else, or before a restart of the broker): moved to
#   127.0.0.1 until the broker restarts, said so; `management.tcp.ip = 127.0.0.1` in
#   rabbitmq.conf makes that last.
# A broker these scripts start themselves gets the loopback listener from its start
# (MANAGEMENT_ERL_ARGS).
MANAGEMENT_RECORD="$RUN_DIR/rabbitmq-management"
MANAGEMENT_ERL_ARGS='-rabbitmq_management tcp_config [{ip,"127.0.0.1"},{port,15672}]'

# Where the running management plugin listens: loopback, all, or not_running.
management_binding() {
  rabbitmqctl eval '
    case lists:keymember(rabbitmq_management, 1, application:which_applications()) of
      false -> not_running;
      true ->
        C = case application:get_env(rabbitmq_management, tcp_config) of
              {ok, L} when is_list(L) -> L;
              _ -> case application:get_env(rabbitmq_management, listener) of
                     {ok, L} when is_list(L) -> L;
                     _ -> []
                   end
            end,
        case proplists:get_value(ip, C) of
          "127.0.0.1" -> loopback;
          {127, 0, 0, 1} -> loopback;
          "::1" -> loopback;
          {0, 0, 0, 0, 0, 0, 0, 1} -> loopback;
          _ -> all
        end
    end.' 2>/dev/null
}

ensure_rabbitmq_management() {
  if ! command -v rabbitmqctl >/dev/null; then
    # A broker this machine does not run (compose.yaml publishes it on 127.0.0.1 only).
    port_open 15672 || say "RabbitMQ's management API does not answer on 127.0.0.1:15672 (the dashboard falls back to AMQP; some tests need it)"
    return 0
  fi
  local binding
  if ! binding=$(management_binding); then
    say "cannot ask RabbitMQ about its management plugin (rabbitmqctl eval failed: run as root or as the rabbitmq user); leaving it as it is"
    return 0
  fi
  case "$binding" in
    loopback) ;;
    not_running)
      say "enabling RabbitMQ's management plugin on 127.0.0.1:15672 only (scripts/down turns it off again)"
      rabbitmqctl eval 'application:set_env(rabbitmq_management, tcp_config, [{ip, "127.0.0.1"}, {port, 15672}]).' >/dev/null 2>&1 \
        && rabbitmq-plugins enable --quiet rabbitmq_management >/dev/null 2>&1 \
        || { say "could not enable the RabbitMQ management plugin"; return 0; }
      echo enabled >"$MANAGEMENT_RECORD"
      ;;
    all)
      say "RabbitMQ's management plugin listens on every interface; moving it to 127.0.0.1 (until the broker restarts)"
      rabbitmqctl eval '
        C0 = case application:get_env(rabbitmq_management, tcp_config) of
               {ok, L} when is_list(L) -> L;
               _ -> [{port, 15672}]
             end,
        ok = application:stop(rabbitmq_management),
        ok = application:set_env(rabbitmq_management, tcp_config, lists:keystore(ip, 1, C0, {ip, "127.0.0.1"})),
        ok = application:start(rabbitmq_management).' >/dev/null 2>&1 \
        || { say "could not move the RabbitMQ management plugin to 127.0.0.1"; return 0; }
      [ -f "$MANAGEMENT_RECORD" ] || echo moved >"$MANAGEMENT_RECORD"
      ;;
  esac
  local i
  for ((i = 0; i < 300; i++)); do port_open 15672 && return 0; sleep 0.1; done
  say "RabbitMQ's management API did not come up on 127.0.0.1:15672"
}

# The Python that runs moto: this machine's, or a virtualenv of our own where the system's
# Python will not take packages from pip (PEP 668, as on Debian 12) or has no pip.
MOTO_PYTHON="python3"
# libfaketime, for the tests that run the dispatcher with a wrong wall clock (e2e clock.rs).
ensure_faketime() {
  [ -e /usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1 ] && return 0
  on_macos && { say "faketime's library is Linux-only here; the clock tests will fail"; return 0; }
  install_debian_packages faketime
}

ensure_moto_installed() {
  if [ -x "$RUN_DIR/moto-venv/bin/python" ]; then MOTO_PYTHON="$RUN_DIR/moto-venv/bin/python"; fi
  if "$MOTO_PYTHON" -c 'import moto.server, flask, flask_cors' 2>/dev/null; then return 0; fi
  command -v python3 >/dev/null || install_debian_packages python3
  say "installing moto[server] (the SES stand-in) from PyPI"
  if python3 -m pip install --quiet --disable-pip-version-check 'moto[server]>=5,<6' 2>/dev/null; then
    MOTO_PYTHON="python3"
    return 0
  fi
  say "this Python takes no packages from pip; installing moto into $RUN_DIR/moto-venv"
  python3 -m venv "$RUN_DIR/moto-venv" 2>/dev/null || {
    install_debian_packages python3-venv
    python3 -m venv "$RUN_DIR/moto-venv"
  } || die "could not create a virtualenv for moto"
  MOTO_PYTHON="$RUN_DIR/moto-venv/bin/python"
  "$MOTO_PYTHON" -m pip install --quiet --disable-pip-version-check 'moto[server]>=5,<6' \
    || die "could not install moto[server]"
}

ensure_moto() {
  if port_open "$MOTO_PORT"; then return 0; fi
  ensure_moto_installed
  say "starting moto (SES stand-in) on 127.0.0.1:$MOTO_PORT"
  nohup "$MOTO_PYTHON" -m moto.server -H 127.0.0.1 -p "$MOTO_PORT" >"$RUN_DIR/moto.log" 2>&1 &
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
  "$MOTO_PYTHON" -m moto.server -H 127.0.0.1 -p "$port" >"$RUN_DIR/moto-test.log" 2>&1 </dev/null &
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
