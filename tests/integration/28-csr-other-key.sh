#!/usr/bin/env bash
# A board whose CSR is for another key pair than the one it reported at
# KEYGEN (fault csr-other-key: a real CSR, validly signed in its token,
# by a second key) fails at the CSR step, before the CA is asked: no
# certificate is issued or requested for it, and nothing reaches the
# board.  Another board on the same line passes.
. "$(dirname "$0")/lib.sh"

line_setup "$T" 2
b1=$(board_dir 1)
id1="$(sed -n 's/^model *= *//p' "$b1/board.conf")-$(basename "$b1")"
sed -i 's/^fault = .*/fault = csr-other-key/' "$b1/board.conf"
line_start "$T"
set +e
"$KL" batch --config "$T/station.conf" >"$T/out.jsonl" 2>"$T/err.log"
rc=$?
set -e
[ $rc = 1 ] || { tail "$T/err.log" >&2; fail "a board with a CSR for another key: exit $rc, expected 1"; }
grep -q "fault injection: CSR signed with another key pair" "$T/jig.log" ||
	fail "the agent did not make its CSR with another key"
grep '"event":"failed"' "$T/out.jsonl" | grep '"slot":1' | grep '"step":"csr"' |
	grep -q "board's CSR is not for the key it just generated" ||
	{ grep '"event":"failed"' "$T/out.jsonl" >&2; fail "board 1 did not fail at the CSR for its key"; }
grep '"event":"passed"' "$T/out.jsonl" | grep -q '"slot":2' || fail "board 2 did not pass"

q() { sqlite3 "$T/audit.db" "$1"; }
[ "$(q "SELECT count(*) FROM events WHERE device_id='$id1' AND step IN ('ca', 'issued')")" = 0 ] ||
	fail "board 1's CSR went to the CA: $(q "SELECT step, outcome FROM events WHERE device_id='$id1'" | tr '\n' ' ')"
[ "$(q "SELECT count(*) FROM events WHERE step='issued'")" = 1 ] ||
	fail "expected one certificate (board 2's)"
[ "$(q "SELECT outcome FROM events WHERE device_id='$id1' AND step='csr'")" = failed ] ||
	fail "board 1's CSR failure is not in the audit log"
[ -z "$(ls -A "$b1/rootfs/var/sota/import")" ] ||
	fail "files reached board 1: $(ls -A "$b1/rootfs/var/sota/import")"
objs=$(board_p11 "$b1" --login --pin "$(board_pin "$b1")" --list-objects 2>/dev/null)
! grep -q "Certificate Object" <<<"$objs" || fail "board 1's token holds a certificate: $objs"
! grep -qi "^ *ID: *02$" <<<"$objs" || fail "board 1's token holds a key at 02: $objs"
"$KL" audit verify --db "$T/audit.db" >/dev/null || fail "audit chain"
echo "PASS csr-other-key"
