#!/usr/bin/env bash
# A board that loses power in the middle of writing client.pem: its slot
# fails with a reason, the audit log says so, and nothing half-written is
# visible in its import directory; the other boards are not disturbed.
. "$(dirname "$0")/lib.sh"

line_setup "$T" 3 --fault-slot 2 --fault exit-in-put-file:client.pem
conf_set "$T/station.conf" link timeout_ms 1000
conf_set "$T/station.conf" link attempts 2
line_start "$T"
set +e
"$KL" batch --config "$T/station.conf" >"$T/out.jsonl"
rc=$?
set -e
[ $rc -eq 1 ] || fail "batch exited $rc, expected 1 (a board failed)"
s=$(summary "$T/out.jsonl")
[ "$(jq .passed <<<"$s")" = 2 ] && [ "$(jq .failed <<<"$s")" = 1 ] ||
	fail "summary: $s"
failed=$(grep '"event":"failed"' "$T/out.jsonl")
[ "$(jq .slot <<<"$failed")" = 2 ] || fail "wrong slot failed: $failed"
[ "$(jq -r .step <<<"$failed")" = write ] || fail "failed at: $failed"
[ -n "$(jq -r .message <<<"$failed")" ] || fail "no reason in words"

b=$(board_dir 2)
imp=$b/rootfs/var/sota/import
for f in client.pem root.crt gateway.url; do
	[ ! -e "$imp/$f" ] || fail "$f is in the import dir of the pulled board"
done
# Whatever the board left staged is hidden from aktualizr and removed
# by the agent at its next start.
[ -z "$(ls "$imp")" ] || fail "visible files on the pulled board: $(ls "$imp")"

serial=$(basename "$b")
[ "$(sqlite3 "$T/audit.db" "SELECT count(*) FROM events WHERE board_serial='$serial' AND outcome='failed' AND error IS NOT NULL")" -ge 1 ] ||
	fail "no failed audit row for $serial"
[ "$(sqlite3 "$T/audit.db" "SELECT count(*) FROM events WHERE board_serial='$serial' AND step='issued'")" = 1 ] ||
	fail "the issued certificate for $serial is not in the audit log"
"$KL" audit verify --db "$T/audit.db" >/dev/null || fail "audit chain broken"

for i in 1 3; do
	imp=$(board_dir $i)/rootfs/var/sota/import
	[ -s "$imp/client.pem" ] || fail "board $i was disturbed"
done
echo "PASS board-pulled"
