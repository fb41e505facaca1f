#!/usr/bin/env bash
# Two checks the review could switch off unnoticed.
#  1. A file that reads back differently after COMMIT (a flash cell that
#     flips) fails the board at verify, and the board is cleared.
#  2. Every proof-of-possession challenge is fresh: 32 random bytes, never
#     the same twice.
. "$(dirname "$0")/lib.sh"

line_setup "$T" 2
b1=$(board_dir 1)
b2=$(board_dir 2)
id2="$(sed -n 's/^model *= *//p' "$b2/board.conf")-$(basename "$b2")"
sed -i 's/^fault = .*/fault = corrupt-after-commit:gateway.url/' "$b1/board.conf"
sed -i 's/^fault = .*/fault = record-challenge/' "$b2/board.conf"
line_start "$T"
set +e
"$KL" batch --config "$T/station.conf" >"$T/one.jsonl"
rc=$?
set -e
[ $rc = 1 ] || fail "a board whose file reads back wrong: exit $rc, expected 1"
grep '"event":"failed"' "$T/one.jsonl" | grep '"slot":1' | grep '"step":"verify"' |
	grep -q "gateway.url read back from the board differs" ||
	fail "board 1 did not fail at the read-back"
[ -z "$(ls -A "$b1/rootfs/var/sota/import")" ] || fail "board 1 was not cleared"
"$KL" batch --config "$T/station.conf" --reprovision "$id2" >"$T/two.jsonl" || true
grep '"event":"passed"' "$T/two.jsonl" | grep -q '"slot":2' || fail "board 2 did not pass again"
[ "$(wc -l <"$b2/.challenges")" = 2 ] || fail "expected two recorded challenges"
[ "$(sort -u "$b2/.challenges" | wc -l)" = 2 ] || fail "a challenge was used twice"
while read -r c; do
	[ ${#c} = 64 ] || fail "a challenge is not 32 bytes: $c"
	[ "$c" != "$(printf '0%.0s' {1..64})" ] || fail "an all-zero challenge"
done <"$b2/.challenges"
echo "PASS readback-pop-fresh"
