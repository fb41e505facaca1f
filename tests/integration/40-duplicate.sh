#!/usr/bin/env bash
# A device ID that was already provisioned is refused (and audited) unless
# re-provisioning is asked for by name; that is audited too.
. "$(dirname "$0")/lib.sh"

line_setup "$T" 2
line_start "$T"
"$KL" batch --config "$T/station.conf" >"$T/first.jsonl" || fail "first run"
b1=$(board_dir 1)
id1="$(sed -n 's/^model *= *//p' "$b1/board.conf")-$(basename "$b1")"
before=$(sha256sum "$b1/rootfs/var/sota/import/client.pem")

set +e
"$KL" batch --config "$T/station.conf" >"$T/second.jsonl"
rc=$?
set -e
[ $rc -eq 1 ] || fail "second run exited $rc, expected 1"
[ "$(grep -c '"error":"duplicate"' "$T/second.jsonl")" = 2 ] ||
	fail "both boards should be refused as duplicates"
[ "$(sha256sum "$b1/rootfs/var/sota/import/client.pem")" = "$before" ] ||
	fail "a refused board was written to"
[ "$(sqlite3 "$T/audit.db" "SELECT count(*) FROM events WHERE outcome='refused' AND step='dupcheck'")" = 2 ] ||
	fail "refusals not audited"
[ "$(sqlite3 "$T/audit.db" "SELECT count(*) FROM events WHERE step='issued'")" = 2 ] ||
	fail "a certificate was issued for a refused board"

"$KL" batch --config "$T/station.conf" --count 1 --reprovision "$id1" \
    >"$T/third.jsonl" || fail "re-provisioning board 1 failed"
[ "$(sha256sum "$b1/rootfs/var/sota/import/client.pem")" != "$before" ] ||
	fail "re-provisioned board kept its old certificate"
[ "$(sqlite3 "$T/audit.db" "SELECT count(*) FROM events WHERE step='reprovision' AND device_id='$id1'")" = 1 ] ||
	fail "re-provisioning not audited"
"$KL" audit verify --db "$T/audit.db" >/dev/null || fail "audit chain"
echo "PASS duplicate"
