#!/usr/bin/env bash
# Start a throw-away PostgreSQL server on loopback for the distributed-search test (Debian's package).
# Prints the connection URL on stdout; prints nothing (and exits 0) where no server can be had.
set -u
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql) >/dev/null 2>&1 || true
  fi
fi
PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -n "$PGBIN" ] && [ -x "$PGBIN/initdb" ] || exit 0
PORT=${EDGEPLAN_PG_PORT:-54329}
DATA=$(mktemp -d /tmp/edgeplan-pg.XXXXXX)
RUN=""
if [ "$(id -u)" = 0 ]; then chown postgres "$DATA"; RUN="su postgres -s /bin/bash -c"; else RUN="bash -c"; fi
$RUN "$PGBIN/initdb -D $DATA -A trust -U postgres" >/dev/null 2>&1 || exit 0
$RUN "$PGBIN/pg_ctl -D $DATA -o '-k $DATA -p $PORT -c listen_addresses=127.0.0.1' -l $DATA/log -w start" >/dev/null 2>&1 || exit 0
echo "$DATA" > /tmp/edgeplan-pg.datadir
echo "postgresql://postgres@127.0.0.1:$PORT/postgres"
