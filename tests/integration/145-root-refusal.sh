#!/usr/bin/env bash
# The station refuses to run as root unless --allow-root: batch and
# console say why in one line and exit 2 before station.conf is read (no
# audit log appears, no board is touched); with --allow-root, and as the
# station's own user, the same line provisions.  audit, jig, plant, help
# and version run as root.  This test runs keyline as root ON PURPOSE
# ($KL_BIN, not the $KL wrapper): it is the refusal under test.
. "$(dirname "$0")/lib.sh"

[ "$(id -u)" = 0 ] || { echo "SKIP root-refusal: needs root"; exit 0; }

line_setup "$T" 2
line_start "$T"
why="refusing to run as root: a network-facing station holding the CA PIN should run as a dedicated user (see docs/install.md), or pass --allow-root"

for cmd in batch console; do
	set +e
	"$KL_BIN" $cmd --config "$T/station.conf" >"$T/out" 2>"$T/err" </dev/null
	rc=$?
	set -e
	[ $rc -eq 2 ] || fail "$cmd as root: exit $rc, want 2"
	[ "$(wc -l <"$T/err")" = 1 ] || fail "$cmd as root: not one line: $(cat "$T/err")"
	grep -qxF "keyline $cmd: $why" "$T/err" ||
		fail "$cmd as root: $(cat "$T/err")"
	[ ! -s "$T/out" ] || fail "$cmd as root wrote: $(cat "$T/out")"
done
# Refused before anything was opened: no audit log.
[ ! -e "$T/audit.db" ] || fail "a refused station created its audit log"
# The refusal comes before the configuration is read.
"$KL_BIN" batch --config "$T/nonexistent.conf" 2>"$T/err" && fail "batch ran"
grep -q "refusing to run as root" "$T/err" || fail "config read first: $(cat "$T/err")"

# As the station's user (the wrapper), then as root with --allow-root.
"$KL" batch --count 1 --config "$T/station.conf" >"$T/user.jsonl" ||
	fail "batch as $KEYLINE_STATION_USER failed"
[ "$(stat -c %U "$T/audit.db")" = "$KEYLINE_STATION_USER" ] ||
	fail "the audit log is not the station user's"
# The audit log stays the station's: root with --allow-root may use it,
# and it must not take it over (SQLite keeps the owner of an existing file).
"$KL_BIN" batch --allow-root --config "$T/station.conf" >"$T/root.jsonl" 2>"$T/root.err" ||
	fail "batch --allow-root failed: $(tail -n 3 "$T/root.err")"
summary "$T/root.jsonl" | jq -e '.passed == 1 and .already_provisioned == 1' >/dev/null ||
	fail "batch --allow-root: $(summary "$T/root.jsonl")"

# The others run as root.
"$KL_BIN" audit verify --db "$T/audit.db" >/dev/null || fail "audit verify as root"
"$KL_BIN" version | grep -q '^keyline ' || fail "version as root"
"$KL_BIN" help batch | grep -q -- '--allow-root' || fail "help batch as root"
"$KL_BIN" jig scan --config "$T/station.conf" >/dev/null || fail "jig scan as root"
echo "PASS root-refusal"
