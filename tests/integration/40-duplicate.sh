#!/usr/bin/env bash
# A board that already holds the key and certificate recorded for its
# device ID is "already provisioned": its own event, no failure, nothing
# written, no new certificate, exit 0.  A different board claiming that ID
# is a refused duplicate whose message names the earlier record (station,
# time, certificate serial).  Re-provisioning by name works and is audited.
. "$(dirname "$0")/lib.sh"

line_setup "$T" 2
line_start "$T"
"$KL" batch --config "$T/station.conf" >"$T/first.jsonl" || fail "first run"
b1=$(board_dir 1)
id1="$(sed -n 's/^model *= *//p' "$b1/board.conf")-$(basename "$b1")"
serial1=$(grep '"event":"passed"' "$T/first.jsonl" | jq -r "select(.device_id == \"$id1\") | .cert_serial")
[ -n "$serial1" ] || fail "no certificate serial for $id1 in the first run"
before=$(sha256sum "$b1/rootfs/var/sota/import/client.pem")

# The same boards again (a batch re-run after a crash): already provisioned.
"$KL" batch --config "$T/station.conf" >"$T/second.jsonl" ||
	fail "second run over the same boards exited $?, expected 0"
[ "$(grep -c '"event":"already_provisioned"' "$T/second.jsonl")" = 2 ] ||
	fail "both boards should be reported as already provisioned"
grep -q '"event":"failed"' "$T/second.jsonl" && fail "a board failed"
[ "$(summary "$T/second.jsonl" | jq .already_provisioned)" = 2 ] ||
	fail "summary does not count the already provisioned boards"
[ "$(sha256sum "$b1/rootfs/var/sota/import/client.pem")" = "$before" ] ||
	fail "an already provisioned board was written to"
[ "$(sqlite3 "$T/audit.db" "SELECT count(*) FROM events WHERE step='issued'")" = 2 ] ||
	fail "a certificate was issued for an already provisioned board"
[ "$(sqlite3 "$T/audit.db" "SELECT count(*) FROM events WHERE step='done' AND outcome='already'")" = 2 ] ||
	fail "already provisioned boards not audited"

# A different board (fresh token, same serial) claiming board 1's ID.
line_stop "$T"
"$KEYLINE_BIN/keyline-jig" init --dir "$T" --boards 2 --force >/dev/null 2>&1 ||
	fail "re-initialising the boards"
line_start "$T"
set +e
"$KL" batch --config "$T/station.conf" --count 1 >"$T/third.jsonl"
rc=$?
set -e
[ $rc -eq 1 ] || fail "a different board with a provisioned ID: exit $rc, expected 1"
msg=$(grep '"event":"failed"' "$T/third.jsonl" | jq -r .message)
grep -q '"error":"duplicate"' "$T/third.jsonl" || fail "not refused as a duplicate"
case "$msg" in
*"certificate serial $serial1"*) ;;
*) fail "refusal does not name the earlier certificate: $msg" ;;
esac
when=$(sqlite3 "$T/audit.db" "SELECT time FROM events WHERE step='done' AND outcome='passed' AND device_id='$id1'")
echo "$msg" | grep -qF "at $when" || fail "refusal does not say when ($when): $msg"
echo "$msg" | grep -q "$(sqlite3 "$T/audit.db" "SELECT station FROM events LIMIT 1")" ||
	fail "refusal does not name the station: $msg"
[ "$(sqlite3 "$T/audit.db" "SELECT count(*) FROM events WHERE outcome='refused' AND step='dupcheck'")" = 1 ] ||
	fail "refusal not audited"
[ -e "$b1/rootfs/var/sota/import/client.pem" ] &&
	fail "a refused board was written to"
[ "$(sqlite3 "$T/audit.db" "SELECT count(*) FROM events WHERE step='issued'")" = 2 ] ||
	fail "a certificate was issued for a refused board"

"$KL" batch --config "$T/station.conf" --count 1 --reprovision "$id1" \
    >"$T/fourth.jsonl" || fail "re-provisioning board 1 failed"
[ "$(sha256sum "$b1/rootfs/var/sota/import/client.pem")" != "$before" ] ||
	fail "re-provisioned board kept its old certificate"
[ "$(sqlite3 "$T/audit.db" "SELECT count(*) FROM events WHERE step='reprovision' AND device_id='$id1'")" = 1 ] ||
	fail "re-provisioning not audited"
"$KL" audit verify --db "$T/audit.db" >/dev/null || fail "audit chain"
echo "PASS duplicate"
