#!/usr/bin/env bash
# Prepare this machine (Debian 12) to run and test Berth: Docker, busybox-static, PostgreSQL, Redis,
# the `berth` role and the project's virtualenv. Idempotent and quick when everything is in place: it
# installs only what is missing, runs `apt-get update` once and only when something must be installed,
# and never starts a second PostgreSQL or Redis when one already answers on 127.0.0.1.
#
#   sudo bash infrastructure/local/bootstrap.sh      (root is needed only to install or start things)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

PG_PORT=5432
# The Debian cluster to create and start when no PostgreSQL answers (`pg_lsclusters` lists them).
PG_CLUSTER="${BERTH_PG_CLUSTER:-main}"
REDIS_PORT=6379
DOCKERD_LOG=/var/log/berth-dockerd.log
VENV="$ROOT/.venv"
STAMP="$VENV/.berth-installed"
export DEBIAN_FRONTEND=noninteractive PGCONNECT_TIMEOUT=5

say() { printf 'bootstrap: %s\n' "$*"; }
die() { printf 'bootstrap: error: %s\n' "$*" >&2; exit 1; }

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO=(sudo); fi
fi
as_root() {
  if [ "$(id -u)" -ne 0 ] && [ ${#SUDO[@]} -eq 0 ]; then
    die "'$*' needs root; run this script as root (sudo bash $0)"
  fi
  "${SUDO[@]}" "$@"
}

# True when something accepts TCP connections on 127.0.0.1:$1 (bash's /dev/tcp; no extra tools).
port_answers() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

wait_for_port() {  # wait_for_port PORT WHAT SECONDS
  local deadline=$((SECONDS + $3))
  until port_answers "$1"; do
    [ $SECONDS -lt $deadline ] || die "$2 did not start listening on 127.0.0.1:$1 within $3s"
    sleep 0.5
  done
}

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

# ------------------------------------------------------------------------------------------ packages
wanted=()
command -v dockerd >/dev/null 2>&1 && command -v docker >/dev/null 2>&1 || wanted+=(docker.io)
# A static busybox is what tiny test images are built from, without pulling anything from a registry.
installed busybox-static || wanted+=(busybox-static)
# The server's binaries even when a PostgreSQL answers elsewhere: the chaos suite (tests/chaos) runs a
# private cluster of its own with them, and likewise a private redis-server.
if ! compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null; then
  wanted+=(postgresql)
fi
command -v psql >/dev/null 2>&1 || wanted+=(postgresql-client)
if ! command -v redis-server >/dev/null 2>&1; then
  wanted+=(redis-server)
fi

pick_python() {
  local candidate
  for candidate in python3.11 python3.12 python3.13 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      command -v "$candidate"
      return 0
    fi
  done
  return 1
}
PYTHON="$(pick_python)" || die "Python 3.11 or newer is needed (apt-get install python3)"
# Debian splits venv/ensurepip out of its own Python; .venv and the tool venvs need it.
"$PYTHON" -c 'import ensurepip, venv' 2>/dev/null || wanted+=(python3-venv)
command -v make >/dev/null 2>&1 || wanted+=(make)
# lb-runtime's compiled hot path needs a C compiler and Python's headers (without them it runs pure Python).
command -v gcc >/dev/null 2>&1 || wanted+=(gcc)
"$PYTHON" -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
  2>/dev/null || wanted+=(python3-dev)
# The UI's browser tests (tests/ui) drive Debian's Chromium through Playwright; no browser is downloaded.
[ -x /usr/bin/chromium ] || wanted+=(chromium)

if [ ${#wanted[@]} -gt 0 ]; then
  say "installing ${wanted[*]}"
  as_root apt-get update -qq
  if port_answers $PG_PORT && [[ " ${wanted[*]} " == *" postgresql "* ]]; then
    # Only the server's binaries are wanted (a PostgreSQL already answers): no second Debian cluster.
    as_root mkdir -p /etc/postgresql-common/createcluster.d
    echo 'create_main_cluster = false' | as_root tee /etc/postgresql-common/createcluster.d/berth.conf >/dev/null
  fi
  as_root apt-get install -y -qq --no-install-recommends "${wanted[@]}" >/dev/null
else
  say "system packages: all present"
fi

# ---------------------------------------------------------------------------------------- PostgreSQL
if port_answers $PG_PORT; then
  say "PostgreSQL: answers on 127.0.0.1:$PG_PORT"
else
  version="$(ls /usr/lib/postgresql 2>/dev/null | sort -V | tail -n 1 || true)"
  [ -n "$version" ] || die "no PostgreSQL server found under /usr/lib/postgresql"
  if [ ! -d "/etc/postgresql/$version/$PG_CLUSTER" ]; then
    say "PostgreSQL: creating cluster $version/$PG_CLUSTER"
    as_root pg_createcluster --port $PG_PORT "$version" "$PG_CLUSTER" >/dev/null
  fi
  if as_root pg_ctlcluster "$version" "$PG_CLUSTER" status >/dev/null 2>&1; then
    die "PostgreSQL $version/$PG_CLUSTER runs but not on 127.0.0.1:$PG_PORT; set port = $PG_PORT and" \
        "listen_addresses = 'localhost' in /etc/postgresql/$version/$PG_CLUSTER/postgresql.conf, then restart it"
  fi
  hba="/etc/postgresql/$version/$PG_CLUSTER/pg_hba.conf"
  # Debian's default already lets 127.0.0.1 in with a password; add that rule only if it is missing.
  if ! as_root grep -Eq '^host[[:space:]]+all[[:space:]]+(all|berth)[[:space:]]+127\.0\.0\.1/32' "$hba"; then
    say "PostgreSQL: allowing password logins for role berth from 127.0.0.1"
    echo 'host all berth 127.0.0.1/32 scram-sha-256' | as_root tee -a "$hba" >/dev/null
  fi
  say "PostgreSQL: starting cluster $version/$PG_CLUSTER"
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" "$PG_CLUSTER" start
  wait_for_port $PG_PORT PostgreSQL 60
fi

# The role the platform and its tests use: berth/berth, allowed to create (test) databases.
berth_role_ready() {
  PGPASSWORD=berth psql -X -w -q -h 127.0.0.1 -p $PG_PORT -U berth -d postgres -tAc \
    "SELECT rolcreatedb FROM pg_roles WHERE rolname = current_user" 2>/dev/null | grep -qx t
}
admin_psql() {  # SQL on stdin, run as a superuser: over TCP when trust allows it, else as the postgres user
  local sql
  sql="$(cat)"
  if psql -X -w -q -h 127.0.0.1 -p $PG_PORT -U postgres -d postgres -tAc 'SELECT 1' >/dev/null 2>&1; then
    printf '%s\n' "$sql" | psql -X -w -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p $PG_PORT -U postgres -d postgres
  else
    printf '%s\n' "$sql" | (cd / && as_root su postgres -c "psql -X -w -q -v ON_ERROR_STOP=1 -d postgres")
  fi
}
if berth_role_ready; then
  say "PostgreSQL: role berth ready"
else
  say "PostgreSQL: creating role berth (LOGIN CREATEDB)"
  admin_psql <<'SQL' || die "could not create role berth; create it yourself: CREATE ROLE berth LOGIN CREATEDB PASSWORD 'berth'"
DO $$
BEGIN
  IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'berth') THEN
    ALTER ROLE berth LOGIN CREATEDB PASSWORD 'berth';
  ELSE
    CREATE ROLE berth LOGIN CREATEDB PASSWORD 'berth';
  END IF;
END
$$;
SQL
  berth_role_ready || die "role berth exists but cannot log in from 127.0.0.1 with password 'berth'; check pg_hba.conf"
fi
if ! PGPASSWORD=berth psql -X -w -q -h 127.0.0.1 -p $PG_PORT -U berth -d postgres -tAc \
     "SELECT 1 FROM pg_database WHERE datname = 'berth'" | grep -qx 1; then
  say "PostgreSQL: creating database berth"
  PGPASSWORD=berth psql -X -w -q -h 127.0.0.1 -p $PG_PORT -U berth -d postgres -c 'CREATE DATABASE berth' >/dev/null
fi

# --------------------------------------------------------------------------------------------- Redis
if port_answers $REDIS_PORT; then
  say "Redis: answers on 127.0.0.1:$REDIS_PORT"
else
  say "Redis: starting on 127.0.0.1:$REDIS_PORT (no persistence: it holds caches and sessions only)"
  as_root redis-server --daemonize yes --bind 127.0.0.1 --port $REDIS_PORT --save "" --appendonly no >/dev/null
  wait_for_port $REDIS_PORT Redis 30
fi

# -------------------------------------------------------------------------------------------- Docker
# The host worker drives Docker; a daemon that cannot start here is reported, not fatal, so the rest of
# the platform still runs and the tests that need Docker say why they skip.
if docker info >/dev/null 2>&1; then
  say "Docker: daemon running"
elif [ "$(id -u)" -ne 0 ] && [ ${#SUDO[@]} -eq 0 ]; then
  say "Docker: daemon not reachable; start dockerd as root (or add yourself to the docker group)"
else
  say "Docker: starting dockerd (log: $DOCKERD_LOG)"
  as_root bash -c "setsid nohup dockerd >>'$DOCKERD_LOG' 2>&1 </dev/null &"
  deadline=$((SECONDS + 60))
  until docker info >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then
      say "Docker: WARNING: dockerd did not become ready in 60s; see $DOCKERD_LOG (tail below)"
      tail -n 5 "$DOCKERD_LOG" 2>/dev/null | sed 's/^/    /' || true
      break
    fi
    sleep 1
  done
  docker info >/dev/null 2>&1 && say "Docker: daemon ready"
fi

# ---------------------------------------------------------------------------------------- virtualenv
if [ ! -x "$VENV/bin/python" ]; then
  say "Python: creating .venv with $("$PYTHON" --version 2>&1)"
  "$PYTHON" -m venv "$VENV"
  rm -f "$STAMP"
fi
want_stamp="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ "$(cat "$STAMP" 2>/dev/null || true)" != "$want_stamp" ]; then
  say "Python: installing berth with its dev extra into .venv (pyproject.toml changed)"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e '.[dev]'
  echo "$want_stamp" >"$STAMP"
else
  say "Python: .venv up to date"
fi
# Rebuilt only when lb-runtime's hot-path sources changed; a failure leaves the pure-Python path serving.
"$VENV/bin/python" lb-runtime/build_hot_path.py --if-stale --optional | sed 's/^/bootstrap: /'
say "ready: next run 'make up' (or .venv/bin/berth local up)"
