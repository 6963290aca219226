#!/usr/bin/env bash
# Makes sure Debian's PostgreSQL runs on loopback with a throwaway role and database for the tests, and prints the
# DATABASE_URL to use (the only thing written to stdout; everything else goes to stderr). Installs the `postgresql`
# package when the server is missing -- a machine may carry the client (psql, pg_lsclusters) without it -- and creates
# and starts a cluster when none runs. No containers, no other downloads. Safe to run again. Used by `make test`; run
# it by hand to point the app at a local PostgreSQL.
set -euo pipefail
exec 3>&1 1>&2
ROLE=${CCRL_PG_ROLE:-ccrl_test}
PASSWORD=${CCRL_PG_PASSWORD:-ccrl-test-password}
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
# The server (started by pg_ctlcluster, or by the package's postinst) inherits every open file descriptor of whoever
# starts it; holding the command substitution's pipe or CI's log pipe open would make `url=$(...)` and CI wait forever.
detached() { ( for fd in /proc/$BASHPID/fd/*; do fd=${fd##*/}; [ "$fd" -gt 2 ] && eval "exec $fd>&-"; done; exec "$@" </dev/null ) ; }
server_version() { ls -d /usr/lib/postgresql/*/bin/postgres 2>/dev/null | sed 's|/usr/lib/postgresql/\([^/]*\)/.*|\1|' | sort -V | tail -1; }
if [ -z "$(server_version)" ] || ! command -v pg_ctlcluster >/dev/null 2>&1; then
  echo "postgres: installing Debian's postgresql (server)"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive detached $SUDO apt-get install -y -qq --no-install-recommends postgresql >/dev/null
fi
version=$(server_version)
[ -n "$version" ] || { echo "postgres: no server binaries under /usr/lib/postgresql after installing" ; exit 1; }
as_postgres() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else sudo -u postgres "$@"; fi; }
cluster_line() { pg_lsclusters -h 2>/dev/null | awk -v v="$version" '$1 == v' | head -1; }
if [ -z "$(cluster_line)" ]; then
  echo "postgres: creating cluster $version/main"
  $SUDO pg_createcluster "$version" main
fi
read -r _ cluster port _ _ _ logfile < <(cluster_line)
ready() { as_postgres pg_isready -q -p "$port"; }
if ! ready; then
  echo "postgres: starting cluster $version/$cluster on port $port"
  detached $SUDO pg_ctlcluster "$version" "$cluster" start || true
  for _ in $(seq 1 100); do ready && break; sleep 0.2; done
fi
if ! ready; then
  echo "postgres: cluster $version/$cluster does not answer on port $port; the end of its log ($logfile):"
  tail -n 30 "$logfile" 2>/dev/null || true
  exit 1
fi
if [ "$(as_postgres psql -p "$port" -qtAc "SELECT 1 FROM pg_roles WHERE rolname = '$ROLE'")" != "1" ]; then
  as_postgres psql -p "$port" -qc "CREATE ROLE $ROLE LOGIN CREATEDB PASSWORD '$PASSWORD'"
fi
if [ "$(as_postgres psql -p "$port" -qtAc "SELECT 1 FROM pg_database WHERE datname = '$ROLE'")" != "1" ]; then
  as_postgres psql -p "$port" -qc "CREATE DATABASE $ROLE OWNER $ROLE"
fi
echo "postgres://$ROLE:$PASSWORD@127.0.0.1:$port/$ROLE" >&3
