#!/usr/bin/env bash
# keyline plant init on a real PostgreSQL 15 server: the schema and the
# station role, idempotent, safe against two inits at once; the station
# role may claim devices and append history and nothing else, and even the
# tables' owner cannot rewrite history or delete a device; the password
# file's rules, a newer schema, a role that would get round the grants,
# and an admin over TCP without a verified server are refused in words.
. "$(dirname "$0")/lib.sh"
. "$top/scripts/pg.sh"

pg_start_tls "$T/pg"
ADMIN=$PG_ADMIN
ST="host=$PG_DIR port=$PG_PORT dbname=keyline user=kl_station"

# admin SQL / station SQL: run SQL, print rows.
admin() { pg_psql "$ADMIN" "$1"; }
station() { PGPASSFILE=$T/pgpass pg_psql "$ST" "$1"; }

# refused WHO SQL ERE: WHO (admin or station) running SQL fails, saying ERE.
refused() {
	if "$1" "$2" >"$T/out" 2>"$T/err"; then
		fail "$1 was allowed: $2"
	fi
	grep -Eq -- "$3" "$T/err" ||
		fail "$1: $2: expected /$3/, got: $(cat "$T/err")"
}

# init_fails ERE ARGS...: keyline plant init exits 2 saying ERE.
init_fails() {
	local ere=$1 rc=0
	shift
	"$KL" plant init "$@" >"$T/out" 2>"$T/err" || rc=$?
	[ "$rc" = 2 ] || fail "plant init $*: exit $rc, expected 2: $(cat "$T/err")"
	grep -Eq -- "^keyline plant: .*($ere)" "$T/err" ||
		fail "plant init $*: expected /$ere/, got: $(cat "$T/err")"
}

pw=$(openssl rand -hex 16)
(umask 077 && echo "$pw" >"$T/station.pw")
station_owns "$T/station.pw"
(umask 077 && echo "*:*:*:kl_station:$pw" >"$T/pgpass")
(umask 077 && echo "*:*:*:kl_station:wrong-$pw" >"$T/pgpass-wrong")

# Every statement in the server log: the password must never be in it.
admin "ALTER SYSTEM SET log_statement = 'all'" >/dev/null
admin "SELECT pg_reload_conf()" >/dev/null

# ---- usage
"$KL" plant init -h | grep -q -- '--station-role ROLE' || fail "plant init -h"
rc=0; "$KL" plant init --admin "$ADMIN" 2>/dev/null || rc=$?
[ "$rc" = 2 ] || fail "plant init without --station-role: exit $rc, expected 2"
rc=0; "$KL" plant frobnicate 2>/dev/null || rc=$?
[ "$rc" = 2 ] || fail "plant frobnicate: exit $rc, expected 2"

# ---- refused before anything is made
init_fails 'not a regular file' --admin "$ADMIN" --station-role kl_station \
    --password-file "$T"
cp "$T/station.pw" "$T/loose.pw"
chmod 644 "$T/loose.pw"
init_fails "password file $T/loose.pw: must be mode 600 and ours \(it is 644" \
    --admin "$ADMIN" --station-role kl_station --password-file "$T/loose.pw"
init_fails 'no password here' --admin "$ADMIN password=x" --station-role kl_station
[ -z "$(admin "SELECT 1 FROM pg_class WHERE relname = 'keyline_schema'")" ] ||
	fail "a refused init left keyline_schema behind"

# ---- init, then again
"$KL" plant init --admin "$ADMIN" --station-role kl_station \
    --password-file "$T/station.pw" >"$T/init1" 2>&1 || fail "plant init: $(cat "$T/init1")"
[ "$(admin 'SELECT version FROM keyline_schema')" = 5 ] || fail "schema version after init"
admin "INSERT INTO device_history (device_id, station, slot, event)
    VALUES ('seen-by-admin', 'admin', 0, 'before the second init')" >/dev/null
"$KL" plant init --admin "$ADMIN" --station-role kl_station \
    --password-file "$T/station.pw" >"$T/init2" 2>&1 || fail "second plant init: $(cat "$T/init2")"
[ "$(admin 'SELECT count(*), max(version) FROM keyline_schema')" = "1|5" ] ||
	fail "keyline_schema after the second init: $(admin 'SELECT * FROM keyline_schema')"
[ "$(admin 'SELECT count(*) FROM device_history')" = 1 ] || fail "the second init touched history"
! grep -qF -- "$pw" "$PG_DIR/server.log" || fail "the password is in the server log"
grep -q 'ALTER ROLE "kl_station" PASSWORD .SCRAM-SHA-256\$' "$PG_DIR/server.log" ||
	fail "no hashed ALTER ROLE in the server log (is log_statement on?)"

# ---- the station role: its password, and exactly its grants
station 'SELECT version FROM keyline_schema' >/dev/null || fail "station cannot log in"
PGPASSFILE=$T/pgpass-wrong pg_psql "$ST" 'SELECT 1' >/dev/null 2>"$T/err" &&
	fail "station logged in with a wrong password"
grep -q 'password authentication failed' "$T/err" || fail "wrong password: $(cat "$T/err")"
want='audit_rows:INSERT audit_rows:SELECT device_conflicts:INSERT device_conflicts:SELECT device_history:INSERT device_history:SELECT devices:INSERT devices:SELECT devices:UPDATE keyline_schema:SELECT'
got=$(admin "SELECT string_agg(table_name || ':' || privilege_type, ' '
    ORDER BY table_name, privilege_type) FROM information_schema.role_table_grants
    WHERE grantee = 'kl_station'")
[ "$got" = "$want" ] || fail "station grants: $got, expected $want"
[ -z "$(admin "SELECT table_name FROM information_schema.role_table_grants
    WHERE grantee = 'PUBLIC' AND table_schema = 'public'")" ] || fail "PUBLIC keeps grants"
[ "$(admin "SELECT has_sequence_privilege('kl_station', 'device_history_id_seq', 'USAGE')")" = t ] ||
	fail "no USAGE on the history sequence"

# What a claim does: insert, update, append.
station "INSERT INTO devices (device_id, state, station, slot, board_serial,
    lease_until) VALUES ('dev-1', 'claimed', 'st-a', 0, 'b1', now() + interval '1 min')" >/dev/null ||
	fail "station cannot INSERT into devices"
station "UPDATE devices SET state = 'provisioned' WHERE device_id = 'dev-1'" >/dev/null ||
	fail "station cannot UPDATE devices"
station "INSERT INTO device_history (device_id, station, slot, event)
    VALUES ('dev-1', 'st-a', 0, 'claim')" >/dev/null || fail "station cannot append history"
# A conflict's id and time are the server's: an id chosen by a station
# would push every station's "newer than" cursor past the real ones.
station "INSERT INTO device_conflicts (id, detected_at, device_id, station, slot, cert_fpr,
    holder_state, holder_station) VALUES (9223372036854775000, '2000-01-01', 'dev-1', 'st-b', 1, 'f',
    'provisioned', 'st-a')" >/dev/null || fail "station cannot report a conflict"
[ "$(admin "SELECT id < 1000 AND detected_at > now() - interval '1 hour' FROM device_conflicts")" = t ] ||
	fail "a station chose a conflict's id or time: $(admin 'SELECT id, detected_at FROM device_conflicts')"

# What it may not.
refused station "UPDATE device_history SET event = 'x'" 'permission denied for table device_history'
refused station "DELETE FROM device_history" 'permission denied for table device_history'
refused station "DELETE FROM devices" 'permission denied for table devices'
refused station "TRUNCATE devices" 'permission denied for table devices'
refused station "TRUNCATE device_history" 'permission denied for table device_history'
refused station "UPDATE keyline_schema SET version = 0" 'permission denied for table keyline_schema'
refused station "ALTER TABLE device_history DISABLE TRIGGER USER" 'must be owner'
refused station "UPDATE device_conflicts SET station = 'x'" 'permission denied for table device_conflicts'
refused station "DELETE FROM device_conflicts" 'permission denied for table device_conflicts'
refused station "TRUNCATE device_conflicts" 'permission denied for table device_conflicts'

# Nor may the owner: the triggers.
refused admin "UPDATE device_history SET event = 'x'" 'device_history is append-only'
refused admin "DELETE FROM device_history" 'device_history is append-only'
refused admin "TRUNCATE device_history" 'device_history is append-only'
refused admin "DELETE FROM devices" 'devices is append-only'
refused admin "TRUNCATE devices" 'devices is append-only'
refused admin "DELETE FROM device_conflicts" 'device_conflicts is append-only'
refused admin "TRUNCATE device_conflicts" 'device_conflicts is append-only'
[ "$(admin 'SELECT count(*) FROM device_history')" = 2 ] || fail "history changed"

# ---- roles that would get round the grants; a name that needs quoting
init_fails 'superuser' --admin "$ADMIN" --station-role postgres
admin 'CREATE ROLE kl_maker CREATEROLE' >/dev/null
init_fails 'makes roles' --admin "$ADMIN" --station-role kl_maker
odd="kl \"odd'role"
"$KL" plant init --admin "$ADMIN" --station-role "$odd" >/dev/null 2>"$T/err" ||
	fail "plant init with a quoted role name: $(cat "$T/err")"
[ "$(admin "SELECT has_table_privilege('kl \"odd''role', 'devices', 'UPDATE')")" = t ] ||
	fail "the oddly named role has no grants"

# ---- a schema newer than this keyline
admin 'UPDATE keyline_schema SET version = 99' >/dev/null
init_fails 'schema is version 99, newer than this keyline knows \(5\)' \
    --admin "$ADMIN" --station-role kl_station
[ "$(admin 'SELECT version FROM keyline_schema')" = 99 ] || fail "a refused init changed the version"
admin 'UPDATE keyline_schema SET version = 5' >/dev/null

# ---- inits at once on a new database: all succeed, one migrates (without
# the advisory lock, CREATE TABLE IF NOT EXISTS races: "duplicate key value
# violates unique constraint pg_type_typname_nsp_index")
admin 'CREATE DATABASE keyline2' >/dev/null
A2=${ADMIN/dbname=keyline/dbname=keyline2}
for i in 1 2 3 4 5 6; do
	"$KL" plant init --admin "$A2" --station-role kl_station >"$T/par$i" 2>&1 &
done
for i in 1 2 3 4 5 6; do
	wait %$i || fail "parallel init $i: $(cat "$T/par$i")"
done
if cat "$T"/par[1-6] | grep -qv '^plant registry: schema version 5, station role kl_station$'; then
	fail "the inits said more than their line: $(cat "$T"/par[1-6])"
fi
[ "$(pg_psql "$A2" 'SELECT count(*), max(version) FROM keyline_schema')" = "1|5" ] ||
	fail "parallel inits: keyline_schema is $(pg_psql "$A2" 'SELECT * FROM keyline_schema')"

# ---- the admin over TCP: only to a verified server
admin "ALTER ROLE postgres PASSWORD 'admin-$pw'" >/dev/null
(umask 077 && echo "*:*:*:postgres:admin-$pw" >"$T/pgpass-admin")
station_owns "$T/pgpass-admin"	# libpq reads it as keyline's user
export PGPASSFILE=$T/pgpass-admin
tcp="host=localhost port=$PG_TLS_PORT dbname=keyline user=postgres"
unverified='a TCP server is not trusted unverified'
init_fails "$unverified" --admin "$tcp" --station-role kl_station
init_fails "$unverified" --admin "$tcp sslmode=require" --station-role kl_station
init_fails "$unverified" --admin "host=$PG_DIR,localhost port=$PG_TLS_PORT" --station-role kl_station
printf '[tcp]\nhost=localhost\nport=%s\ndbname=keyline\nuser=postgres\nsslmode=require\n' \
    "$PG_TLS_PORT" >"$T/pg_service.conf"
PGSERVICEFILE=$T/pg_service.conf init_fails "$unverified" --admin service=tcp --station-role kl_station
PGHOST=localhost init_fails "$unverified" --admin "port=$PG_TLS_PORT dbname=keyline" --station-role kl_station
init_fails 'certificate verify failed' \
    --admin "$tcp sslmode=verify-full sslrootcert=$PG_TLS_OTHER_ROOT" --station-role kl_station
"$KL" plant init --admin "$tcp sslmode=verify-full sslrootcert=$PG_TLS_ROOT" \
    --station-role kl_station >/dev/null 2>"$T/err" || fail "plant init over verified TLS: $(cat "$T/err")"
unset PGPASSFILE

echo "ok"
