#!/usr/bin/env bash
# Makes sure Debian's PostgreSQL runs on loopback with a throwaway role and database for the tests, and prints the
# DATABASE_URL to use. Installs the `postgresql` package if it is missing (no containers, no other downloads).
# Safe to run again. Used by `make test`; run it by hand to point the app at a local PostgreSQL.
set -euo pipefail
ROLE=${CCRL_PG_ROLE:-ccrl_test}
PASSWORD=${CCRL_PG_PASSWORD:-ccrl-test-password}
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
if ! command -v pg_lsclusters >/dev/null 2>&1; then
  echo "postgres: installing Debian's postgresql" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends postgresql >/dev/null
fi
as_postgres() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else sudo -u postgres "$@"; fi; }
read -r version cluster port status _ < <(pg_lsclusters -h | head -1) || true
if [ -z "${version:-}" ]; then
  version=$(ls /usr/lib/postgresql | sort -V | tail -1)
  $SUDO pg_createcluster "$version" main >/dev/null
  read -r version cluster port status _ < <(pg_lsclusters -h | head -1)
fi
if [ "$status" != "online" ]; then
  $SUDO pg_ctlcluster "$version" "$cluster" start
fi
for _ in $(seq 1 50); do as_postgres pg_isready -q -p "$port" && break; sleep 0.2; done
if [ "$(as_postgres psql -p "$port" -qtAc "SELECT 1 FROM pg_roles WHERE rolname = '$ROLE'")" != "1" ]; then
  as_postgres psql -p "$port" -qc "CREATE ROLE $ROLE LOGIN CREATEDB PASSWORD '$PASSWORD'" >/dev/null
fi
if [ "$(as_postgres psql -p "$port" -qtAc "SELECT 1 FROM pg_database WHERE datname = '$ROLE'")" != "1" ]; then
  as_postgres psql -p "$port" -qc "CREATE DATABASE $ROLE OWNER $ROLE" >/dev/null
fi
echo "postgres://$ROLE:$PASSWORD@127.0.0.1:$port/$ROLE"
