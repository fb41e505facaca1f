#!/usr/bin/env bash
# An audit log the station cannot write stops it at start-up, exit 2, with
# a message that names the file and says why, before any board is
# touched (the jig relays no byte).  Real conditions, no mock:
#  - as an unprivileged user: a directory it cannot write (log missing;
#    log writable but no room for its -wal; log and directory read-only
#    with the -wal/-shm a killed station left, which SQLite can open
#    read-only);
#  - where mount works (root, in a private mount namespace; the station
#    still runs as its own user, its log and directory its own): the
#    log's directory bind-mounted read-only (a file system remounted
#    read-only after errors), and a full tmpfs.
. "$(dirname "$0")/lib.sh"

line_setup "$T" 2
line_start "$T"
# A log with rows in it, from a normal run.
"$KL" batch --config "$T/station.conf" >"$T/first.jsonl" 2>"$T/first.err" ||
	{ cat "$T/first.err" >&2; fail "first batch failed"; }
rows=$(sqlite3 "$T/audit.db" "SELECT count(*) FROM events")
# A fresh jig: its byte count at stop must stay 0 from here on.
line_stop "$T"
line_start "$T"

as_nobody() {
	setpriv --reuid=65534 --regid=65534 --clear-groups "$@"
}

# Leave the -wal and -shm a station killed mid-run leaves behind.
leave_wal() {
	local db=$1 pid
	rm -f "$T/fifo"
	mkfifo "$T/fifo"
	sqlite3 "$db" <"$T/fifo" >/dev/null 2>&1 &
	pid=$!
	exec 3>"$T/fifo"
	echo "SELECT count(*) FROM events;" >&3
	for _ in $(seq 50); do
		[ -e "$db-shm" ] && break
		sleep 0.1
	done
	sleep 0.2
	kill -9 "$pid"
	wait "$pid" 2>/dev/null || true
	exec 3>&-
	[ -e "$db-wal" ] && [ -e "$db-shm" ] || fail "no -wal/-shm left behind"
}

# expect_refusal WORDS DB COMMAND...: exit 2, a message naming DB and
# holding WORDS, no event on stdout.
expect_refusal() {
	local words=$1 db=$2 rc
	shift 2
	set +e
	"$@" batch --config "$T/station.conf" >"$T/out" 2>"$T/err"
	rc=$?
	set -e
	[ $rc -eq 2 ] || fail "exit $rc with an unwritable audit log, want 2: $(cat "$T/err")"
	grep "keyline batch:" "$T/err" | grep -qF "$db" ||
		fail "the message does not name $db: $(cat "$T/err")"
	grep "keyline batch:" "$T/err" | grep -qiE "$words" ||
		fail "the message does not say '$words': $(cat "$T/err")"
	if grep -qi "malformed" "$T/err"; then
		fail "an unwritable log is called malformed: $(cat "$T/err")"
	fi
	[ ! -s "$T/out" ] || fail "the station produced events: $(cat "$T/out")"
	grep "keyline batch:" "$T/err"
}

conf_set "$T/station.conf" station audit_db logs/audit.db
# The unprivileged user reads the configuration and certificates.
chmod 755 "$T" "$T/ca"
mkdir "$T/logs"

# As root in a private mount namespace, where that works here.
if unshare -m true 2>/dev/null &&
    unshare -m sh -c "mount -t tmpfs -o size=1m tmpfs '$T/logs'" 2>/dev/null; then
	# 1. A file system that went read-only (errors=remount-ro after a
	#    crash): root cannot write it either.
	cp "$T/audit.db" "$T/logs/audit.db"
	leave_wal "$T/logs/audit.db"
	station_owns "$T/logs"
	cat >"$T/ro.sh" <<EOF
mount --bind "$T/logs" "$T/logs" && mount -o remount,ro,bind "$T/logs" &&
    exec "\$@"
EOF
	expect_refusal "read-only file system" "$T/logs/audit.db" \
	    unshare -m sh "$T/ro.sh" "$KL"

	# 2. A full file system: the log, then nothing left beside it.
	cat >"$T/full.sh" <<EOF
mount -t tmpfs -o size=256k tmpfs "$T/logs" &&
    cp "$T/audit.db" "$T/logs/audit.db" &&
    ${KEYLINE_STATION_USER:+chown -R "$KEYLINE_STATION_USER:" "$T/logs" &&}
    { dd if=/dev/zero of="$T/logs/fill" bs=4k 2>/dev/null || true; } &&
    exec "\$@"
EOF
	expect_refusal "disk full|no space" "$T/logs/audit.db" \
	    unshare -m sh "$T/full.sh" "$KL"
else
	echo "13-audit-readonly-fs: mount does not work here; read-only and full file systems not tried" >&2
fi

rm -f "$T/logs/"*

# 3. The log's directory is not writable and the log does not exist.
chmod 555 "$T/logs"
expect_refusal "directory .*not writable" "$T/logs/audit.db" as_nobody "$KL"

# 4. The log exists and may be written, its directory may not: SQLite
#    cannot make the -wal beside it.
chmod 755 "$T/logs"
cp "$T/audit.db" "$T/logs/audit.db"
chmod 666 "$T/logs/audit.db"
chmod 555 "$T/logs"
expect_refusal "not writable" "$T/logs/audit.db" as_nobody "$KL"

# 5. Log and directory read-only, with the -wal/-shm of a killed station:
#    SQLite opens it read-only without complaint; only a write shows it.
chmod 755 "$T/logs"
chmod 644 "$T/logs/audit.db"
leave_wal "$T/logs/audit.db"
chmod 644 "$T/logs/audit.db-wal" "$T/logs/audit.db-shm"
before=$(sha256sum "$T/logs/audit.db" | cut -d' ' -f1)
expect_refusal "not writable" "$T/logs/audit.db" as_nobody "$KL"
[ "$(sha256sum "$T/logs/audit.db" | cut -d' ' -f1)" = "$before" ] ||
	fail "the refused log changed"

# No board was touched: the jig relayed nothing, the boards hold nothing
# new, and the log of the first run is as it was.
line_stop "$T"
grep "stopped:" "$T/jig.log" | tail -n 1 | grep -q " 0 bytes relayed" ||
	fail "the jig relayed bytes: $(grep "stopped:" "$T/jig.log" | tail -n 1)"
[ "$(sqlite3 "$T/audit.db" "SELECT count(*) FROM events")" = "$rows" ] ||
	fail "the first run's log changed"
"$KL" audit verify --db "$T/audit.db" >/dev/null || fail "audit verify failed"
echo "PASS audit-readonly-fs"
