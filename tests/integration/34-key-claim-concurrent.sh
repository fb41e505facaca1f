#!/usr/bin/env bash
# One key, one device, with the boards at the CA step together: sixteen
# boards, each with its own token holding the same P-256 key pair at the
# TLS id (imported from one key: a cloned image), each answering KEYGEN
# with it (fault same-key), in one batch.  The key-uniqueness check and the
# claim on the key are one step, and the claim lasts until the "ca
# requested" row is on file (step_ca; the row's fsync is not waited for
# under the key lock), so exactly one board gets a certificate and the
# fifteen others are refused for the key, with nothing sent to the CA for
# them, even while that row waits for a slow disk.  Whether a board meets
# the window in which only the claim refuses it depends on timing (about
# one run in four without the claim failed here); test_engine's
# test_key_claims checks the claims themselves.
. "$(dirname "$0")/lib.sh"

n=16
line_setup "$T" $n
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -outform DER \
    -out "$T/key.der" 2>/dev/null || fail "openssl genpkey"
openssl pkey -inform DER -in "$T/key.der" -pubout -outform DER -out "$T/pub.der" ||
	fail "openssl pkey -pubout"
for i in $(seq $n); do
	b=$(board_dir $i)
	pin=$(board_pin "$b")
	board_p11 "$b" --login --pin "$pin" --write-object "$T/key.der" \
	    --type privkey --id 02 --label keyline >/dev/null 2>&1 ||
		fail "board $i: importing the private key"
	board_p11 "$b" --login --pin "$pin" --write-object "$T/pub.der" \
	    --type pubkey --id 02 --label keyline >/dev/null 2>&1 ||
		fail "board $i: importing the public key"
	sed -i 's/^fault = .*/fault = same-key/' "$b/board.conf"
done
line_start "$T"
# Each of the station's syncs takes 100 ms longer (strace's syscall
# fault injection), so a "ca requested" row stays unwritten long enough
# for the other boards to reach the check while it is: the claim, not the
# log, is what must refuse them then.
set +e
strace -f -qq -o /dev/null -e trace=fsync,fdatasync \
    -e inject=fsync:delay_exit=100000 -e inject=fdatasync:delay_exit=100000 \
    "$KL" batch --config "$T/station.conf" >"$T/out.jsonl"
rc=$?
set -e
[ $rc = 1 ] || fail "sixteen boards with one key: batch exited $rc, expected 1"
s=$(summary "$T/out.jsonl")
[ "$(jq .passed <<<"$s")" = 1 ] || fail "not exactly one board passed: $s"
[ "$(jq .failed <<<"$s")" = $((n - 1)) ] || fail "not all the others failed: $s"
[ "$(grep '"event":"failed"' "$T/out.jsonl" | grep '"error":"duplicate"' |
    grep -c 'key refused: it belongs to device')" = $((n - 1)) ] ||
	{ grep '"event":"failed"' "$T/out.jsonl" >&2; fail "the failures are not all the key's refusal"; }
q() { sqlite3 "$T/audit.db" "$1"; }
[ "$(q "SELECT count(*) FROM events WHERE step='ca' AND outcome='requested'")" = 1 ] ||
	fail "more than one CSR for the one key went to the CA"
[ "$(q "SELECT count(*) FROM events WHERE step='issued'")" = 1 ] ||
	fail "more than one certificate for the one key"
[ "$(q "SELECT count(DISTINCT key_fpr) FROM events WHERE step='ca' OR (step='keygen' AND outcome='refused')")" = 1 ] ||
	fail "the boards did not all present the one key"
[ "$(q "SELECT count(*) FROM events WHERE step='keygen' AND outcome='refused'")" = $((n - 1)) ] ||
	fail "the refusals are not in the audit log"
"$KL" audit verify --db "$T/audit.db" >/dev/null || fail "audit chain"
line_stop "$T"
echo "PASS key-claim-concurrent"
