#!/usr/bin/env bash
# Stop the server .ci/start-postgres.sh started (its data folder is named in /tmp/edgeplan-pg.datadir).
DATA=$(cat /tmp/edgeplan-pg.datadir 2>/dev/null) || exit 0
PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
if [ "$(id -u)" = 0 ]; then su postgres -s /bin/bash -c "$PGBIN/pg_ctl -D $DATA stop -m fast"; else "$PGBIN/pg_ctl" -D "$DATA" stop -m fast; fi
rm -rf "$DATA" /tmp/edgeplan-pg.datadir
