# scripts/pg.sh: a throw-away PostgreSQL 15 server for a test or a demo
# (sourced; it needs a fail function: the tests' lib.sh has one; docs/plant.md,
# "Tests").
#
#   pg_start DIR      initdb + pg_ctl in DIR (created, must not exist):
#                     Unix socket in DIR only, no TCP.  Sets PG_DIR,
#                     PG_PORT, PG_ADMIN (the admin's conninfo: "host=DIR
#                     port=N dbname=keyline user=postgres") and exports
#                     PGHOST=DIR and PGPORT; DIR/conninfo holds PG_ADMIN.
#   pg_start_tls DIR  the same, and also listening on 127.0.0.1 with
#                     ssl=on (TCP connections must use TLS and a password).
#                     Also sets PG_TLS_PORT, PG_TLS_ROOT (the throw-away CA
#                     that signed the server certificate, for verify-full:
#                     subjectAltName localhost and 127.0.0.1) and
#                     PG_TLS_OTHER_ROOT (a CA that signed nothing here: an
#                     untrusted root).
#   pg_stop DIR       pg_ctl stop -m fast (-m immediate if that fails).
#                     pg_start arranges it for the test's EXIT: through
#                     lib.sh's on_exit when there is one, else by chaining
#                     the EXIT trap; calling it earlier is fine (it runs
#                     once).
#
# Who may connect: the superuser "postgres" over the socket without a
# password (trust: the socket directory is the test's); every other role
# with its password (scram-sha-256), over TLS only on TCP.
#
# PostgreSQL refuses to run as root: the server runs as the system user
# keyline-pg (created on first use: useradd --system, no home, no shell).
# It must reach DIR, so DIR's parent directories are given o+x
# (traverse, not list) where they lack it: a test's $T becomes 711.
#
# fsync, full_page_writes and synchronous_commit are off: a test server's
# data need not survive a power cut, and start-up takes about a second.

PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
PG_USER=${PG_USER:-keyline-pg}

# A loopback port nothing listens on (bash's /dev/tcp fails to connect);
# our own, so pg.sh needs nothing from lib.sh but fail.
_pg_free_port() {
	local p i
	for ((i = 0; i < 50; i++)); do
		p=$((20000 + RANDOM % 40000))
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			echo "$p"
			return 0
		fi
	done
	return 1
}

# The server user, created once (a second test racing us is fine).
_pg_user() {
	id -u "$PG_USER" >/dev/null 2>&1 && return 0
	useradd --system --no-create-home --home-dir /nonexistent \
	    --shell /usr/sbin/nologin "$PG_USER" 2>/dev/null || true
	id -u "$PG_USER" >/dev/null 2>&1 || fail "pg.sh: cannot create user $PG_USER"
}

# _pg_as CMD...: CMD as the server user, from a directory it can read.
_pg_as() {
	(cd / && setpriv --reuid="$PG_USER" --regid="$PG_USER" --clear-groups \
	    env -u PGHOST -u PGPORT HOME=/nonexistent "$@")
}

# Let the server user traverse every directory above DIR.
_pg_reach() {
	local d
	d=$(dirname "$1")
	while [ "$d" != / ]; do
		_pg_as test -x "$d" || chmod o+x "$d" ||
			fail "pg.sh: cannot open $d to $PG_USER"
		d=$(dirname "$d")
	done
}

# _pg_init DIR: the cluster and its configuration, not started.
_pg_init() {
	local dir=$1
	[ ! -e "$dir" ] || fail "pg.sh: $dir exists"
	_pg_user
	mkdir -m 700 "$dir"
	chown "$PG_USER:" "$dir"
	# A station run as its own user (the tests' KEYLINE_STATION_USER,
	# tests/integration/lib.sh) connects through the socket too.
	if [ -n "${KEYLINE_STATION_USER:-}" ]; then
		chgrp "$KEYLINE_STATION_USER" "$dir" && chmod 710 "$dir"
	fi
	_pg_reach "$dir"
	_pg_as "$PG_BIN/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 \
	    --locale=C.UTF-8 --no-sync >"$dir/initdb.log" 2>&1 ||
		{ cat "$dir/initdb.log" >&2; fail "pg.sh: initdb in $dir"; }
	# Every role but the superuser proves its password; TCP only with TLS.
	_pg_as tee "$dir/data/pg_hba.conf" >/dev/null <<-EOF
	local     all  postgres                   trust
	local     all  all                        scram-sha-256
	hostssl   all  all       127.0.0.1/32     scram-sha-256
	hostnossl all  all       0.0.0.0/0        reject
	EOF
	_pg_as tee -a "$dir/data/postgresql.conf" >/dev/null <<-EOF
	unix_socket_directories = '$dir'
	listen_addresses = ''
	port = 5432
	fsync = off
	full_page_writes = off
	synchronous_commit = off
	max_connections = 50
	shared_buffers = 16MB
	logging_collector = off
	EOF
}

# _pg_run DIR PORT: start, wait, make the keyline database, arrange stop.
_pg_run() {
	local dir=$1 port=$2
	_pg_as "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 20 \
	    -o "-p $port" start >/dev/null 2>&1 ||
		{ tail -n 20 "$dir/server.log" >&2; fail "pg.sh: server in $dir did not start"; }
	_pg_arrange_stop "$dir"
	PG_DIR=$dir
	PG_PORT=$port
	export PGHOST=$dir PGPORT=$port
	PG_ADMIN="host=$dir port=$port dbname=keyline user=postgres"
	psql -X -q -v ON_ERROR_STOP=1 "host=$dir port=$port dbname=postgres user=postgres" \
	    -c 'CREATE DATABASE keyline' >/dev/null || fail "pg.sh: CREATE DATABASE keyline"
	echo "$PG_ADMIN" >"$dir/conninfo"
}

_pg_dirs=()
_pg_arrange_stop() {
	local dir=$1
	if declare -F on_exit >/dev/null; then
		on_exit "pg_stop '$dir'"
		return
	fi
	# No on_exit: stop the servers first, then whatever the trap did.
	if [ ${#_pg_dirs[@]} -eq 0 ]; then
		eval "set -- $(trap -p EXIT)"
		_pg_old_trap=${3:-}
		trap _pg_exit EXIT
	fi
	_pg_dirs+=("$dir")
}

_pg_exit() {
	local d
	for d in "${_pg_dirs[@]}"; do
		pg_stop "$d"
	done
	eval "$_pg_old_trap"
}

pg_start() {
	_pg_init "$1"
	_pg_run "$1" 5432
}

pg_start_tls() {
	local dir=$1 tls=$1/tls port
	_pg_init "$dir"
	port=$(_pg_free_port) || fail "pg.sh: no free port"
	mkdir "$tls"
	(
		cd "$tls"
		for ca in ca other-ca; do
			openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
			    -nodes -keyout "$ca.key" -out "$ca.pem" -days 2 \
			    -subj "/CN=keyline test $ca" -addext basicConstraints=critical,CA:TRUE \
			    -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
		done
		openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
		    -keyout server.key -out server.csr -subj /CN=localhost 2>/dev/null
		printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >server.ext
		openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key \
		    -CAcreateserial -days 2 -extfile server.ext -out server.pem 2>/dev/null
	) || fail "pg.sh: test certificates"
	chown "$PG_USER:" "$tls/server.key" "$tls/server.pem"
	chmod 600 "$tls/server.key"
	chmod 755 "$tls"
	_pg_as tee -a "$dir/data/postgresql.conf" >/dev/null <<-EOF
	listen_addresses = '127.0.0.1'
	ssl = on
	ssl_cert_file = '$tls/server.pem'
	ssl_key_file = '$tls/server.key'
	EOF
	PG_TLS_PORT=$port
	PG_TLS_ROOT=$tls/ca.pem
	PG_TLS_OTHER_ROOT=$tls/other-ca.pem
	_pg_run "$dir" "$port"
}

pg_stop() {
	local dir=$1
	[ -f "$dir/data/postmaster.pid" ] || return 0
	_pg_as "$PG_BIN/pg_ctl" -D "$dir/data" -w -t 10 -m fast stop >/dev/null 2>&1 ||
		_pg_as "$PG_BIN/pg_ctl" -D "$dir/data" -w -t 10 -m immediate stop >/dev/null 2>&1
}

# pg_down / pg_up: the test's server goes away (fast shutdown) and comes
# back on the same directory and port: an outage, for the tests of it.
pg_down() {
	_pg_as "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m fast -w stop >/dev/null ||
		fail "pg.sh: cannot stop the server"
}

pg_up() {
	_pg_as "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w \
	    -t 20 -o "-p $PG_PORT" start >/dev/null ||
		fail "pg.sh: cannot start the server again"
}

# pg_psql CONNINFO SQL: run SQL, stop at the first error; output unaligned,
# tuples only.
pg_psql() {
	psql -X -q -A -t -v ON_ERROR_STOP=1 "$1" -c "$2"
}
