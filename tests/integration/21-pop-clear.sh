#!/usr/bin/env bash
# A board that fails after its files were committed (its key does not
# prove possession of the certificate's key): the station takes back what
# it wrote, so a failed board carries no credentials.  Its import
# directory is empty, its token has no certificate object, the issued
# certificate is still in the audit log (for revocation), and a "clear"
# row records the clean-up.  The same on a re-provisioned board: its old
# files, which no longer match its new key, are removed too.
. "$(dirname "$0")/lib.sh"

line_setup "$T" 3 --fault-slot 2 --fault bad-signature
line_start "$T"
set +e
"$KL" batch --config "$T/station.conf" >"$T/out.jsonl"
rc=$?
set -e
[ $rc -eq 1 ] || fail "batch exited $rc, expected 1"
failed=$(grep '"event":"failed"' "$T/out.jsonl")
[ "$(jq .slot <<<"$failed")" = 2 ] || fail "wrong slot failed: $failed"
[ "$(jq -r .step <<<"$failed")" = pop ] || fail "failed at: $failed"
jq -r .message <<<"$failed" | grep -q "does not verify.*board cleared" ||
	fail "no reason and clean-up in words: $failed"

# Positive control for the listing below: a passed board shows its
# certificate object, so "none listed" means something.
board_p11 "$(board_dir 3)" --login --pin "$(board_pin "$(board_dir 3)")" \
    --list-objects --type cert 2>/dev/null | grep -q "Certificate Object" ||
	fail "a passed board's certificate object is not listed"

check_cleared() {
	local b=$1 serial
	serial=$(basename "$b")
	[ -z "$(ls -A "$b/rootfs/var/sota/import")" ] ||
		fail "$serial: files left: $(ls -A "$b/rootfs/var/sota/import")"
	board_p11 "$b" --login --pin "$(board_pin "$b")" --list-objects --type cert \
	    >"$T/certs" 2>/dev/null || fail "$serial: cannot list the token"
	! grep -q "Certificate Object" "$T/certs" ||
		fail "$serial: certificate object left in the token"
	board_p11 "$b" --login --pin "$(board_pin "$b")" --list-objects --type privkey \
	    2>/dev/null | grep -q "ID:.*02" || fail "$serial: the key pair was removed"
	[ "$(sqlite3 "$T/audit.db" "SELECT outcome FROM events WHERE board_serial='$serial' AND step='clear' ORDER BY id DESC LIMIT 1")" = ok ] ||
		fail "$serial: no clear row"
}
check_cleared "$(board_dir 2)"
serial=$(basename "$(board_dir 2)")
[ "$(sqlite3 "$T/audit.db" "SELECT count(*) FROM events WHERE board_serial='$serial' AND step='issued'")" = 1 ] ||
	fail "the certificate issued to $serial is not in the audit log"
for i in 1 3; do
	[ -s "$(board_dir $i)/rootfs/var/sota/import/client.pem" ] || fail "board $i was disturbed"
done

# Board 1 passed; its secure element is swapped for one that fails, and it
# is re-provisioned: it fails at pop and loses its old files as well.
line_stop "$T"
sed -i 's/^fault = .*/fault = bad-signature/' "$(board_dir 1)/board.conf"
line_start "$T"
id1=$(jq -r 'select(.event == "passed" and .slot == 1) | .device_id' "$T/out.jsonl")
set +e
"$KL" batch --config "$T/station.conf" --count 1 --reprovision "$id1" >"$T/out2.jsonl"
rc=$?
set -e
[ $rc -eq 1 ] || fail "re-provisioning a bad board exited $rc, expected 1"
check_cleared "$(board_dir 1)"
"$KL" audit verify --db "$T/audit.db" >/dev/null || fail "audit chain"
echo "PASS pop-clear"
