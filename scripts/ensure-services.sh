#!/usr/bin/env bash
# Starts what kluis's tests and `make dev` need on this machine: PostgreSQL on
# 127.0.0.1:5432 (trust auth, user postgres), Redis on 127.0.0.1:6379, and
# Chromium for the browser tests.
# Installs them from Debian's packages when they are missing. Idempotent.
set -euo pipefail

log() { printf 'ensure-services: %s\n' "$*" >&2; }

apt_install() {
  if [ "$(id -u)" != 0 ]; then
    log "cannot install $*: not root"; return 1
  fi
  log "installing $*"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

ensure_postgres() {
  if pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then return 0; fi
  if [ ! -d /etc/postgresql ] || [ -z "$(ls /etc/postgresql 2>/dev/null)" ]; then
    apt_install postgresql
  fi
  local version
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  log "starting PostgreSQL $version"
  pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  for _ in $(seq 1 60); do
    pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null && break
    sleep 0.5
  done
  pg_isready -h 127.0.0.1 -p 5432 -q || { log "PostgreSQL did not come up"; return 1; }
  # Tests connect over TCP as postgres without a password; make sure they can.
  if ! psql -h 127.0.0.1 -U postgres -d postgres -Atc 'SELECT 1' >/dev/null 2>&1; then
    local hba
    hba=$(ls /etc/postgresql/"$version"/main/pg_hba.conf)
    log "allowing trust auth for local TCP connections in $hba"
    sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
    pg_ctlcluster --skip-systemctl-redirect "$version" main reload
  fi
}

ensure_redis() {
  if redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then return 0; fi
  command -v redis-server >/dev/null || apt_install redis-server
  log "starting Redis"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
  for _ in $(seq 1 40); do
    redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && return 0
    sleep 0.25
  done
  log "Redis did not come up"; return 1
}

# The browser tests (the staff console, the hosted pages) drive Debian's
# Chromium headless through chromedp.
ensure_chromium() {
  if command -v chromium >/dev/null; then return 0; fi
  apt_install chromium
}

ensure_postgres
ensure_redis
ensure_chromium
log "PostgreSQL, Redis and Chromium are up"
