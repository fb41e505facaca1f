#!/usr/bin/env bash
# A new board commits its credentials, and the station dies before it
# records "write ok".  The console lists the device in doubt at start-up.
# Run again with no flags, the station lists the device in doubt, asks
# the board, finds the committed set and finishes it: the board passes with its one certificate, no second one is issued,
# and no --reprovision is needed.
. "$(dirname "$0")/lib.sh"

line_setup "$T" 1
b=$(board_dir 1)
# The first request after COMMIT: version 1 reads the files back with
# FILE_HASH; version 2 had them read back in COMMIT's answer, and SIGN
# comes next.
after=SIGN
[ "${KEYLINE_PROTOCOL_MAX:-}" = 1 ] && after=FILE_HASH
sed -i "s/^fault = .*/fault = pause-before:$after/" "$b/board.conf"
line_start "$T"
bg_start "$KL" batch --config "$T/station.conf" >"$T/one.jsonl" 2>&1
st=$!
wait_for -p "$st" -l "$T/one.jsonl" 30 "the board to reach $after" test -e "$b/.paused"
# COMMIT was answered and "write ok" may or may not be in the log; kill
# before the read-back either way.
kill -KILL "$st"
wait "$st" 2>/dev/null || true
rm -f "$b/.paused"
[ -s "$b/rootfs/var/sota/import/client.pem" ] || fail "the board did not commit"
first=$(openssl x509 -in "$b/rootfs/var/sota/import/client.pem" -noout -fingerprint -sha256)

# The operator's console lists it at start-up, before any board starts.
sock=kl$$
tm() { tmux -L "$sock" "$@"; }
on_exit "tmux_stop $sock"
id="$(sed -n 's/^model *= *//p' "$b/board.conf")-$(basename "$b")"
tm new-session -d -x 120 -y 30 -s c \
    "'$KL' console --config '$T/station.conf'; echo \"console exit \$?\"; sleep 600"
# on_screen TEXT: the console's screen (kept in $T/screen) shows TEXT.
on_screen() { tm capture-pane -p -t c >"$T/screen" && grep -q -- "$1" "$T/screen"; }
wait_for -l "$T/screen" 20 "the console to list the device in doubt" \
    on_screen "IN DOUBT $id (board $(basename "$b"))"
on_screen 'line PAUSED' || fail "the console started a board"
tm send-keys -t c q
wait_for -l "$T/screen" 20 "the console to quit" on_screen 'console exit 0'

"$KL" batch --config "$T/station.conf" >"$T/two.jsonl" ||
	fail "the same command after the crash: exit $?"
grep -q '"event":"in_doubt"' "$T/two.jsonl" || fail "the device was not listed in doubt"
grep -q '"event":"passed"' "$T/two.jsonl" || fail "the board did not pass"
[ "$(sqlite3 "$T/audit.db" "SELECT count(*) FROM events WHERE step='issued'")" = 1 ] ||
	fail "a second certificate was issued"
[ "$(sqlite3 "$T/audit.db" "SELECT count(*) FROM events WHERE step='recover' AND outcome='provisioned'")" = 1 ] ||
	fail "the recovery is not audited"
[ "$(openssl x509 -in "$b/rootfs/var/sota/import/client.pem" -noout -fingerprint -sha256)" = "$first" ] ||
	fail "the board's certificate changed"
openssl verify -CAfile "$T/ca/fleet-root.pem" "$b/rootfs/var/sota/import/client.pem" >/dev/null ||
	fail "the board's certificate does not verify"
# Once more: now it is simply already provisioned.
"$KL" batch --config "$T/station.conf" >"$T/three.jsonl" || fail "third run: exit $?"
grep -q '"event":"already_provisioned"' "$T/three.jsonl" || fail "not already provisioned"
grep -q '"event":"in_doubt"' "$T/three.jsonl" && fail "still listed in doubt after it passed"
"$KL" audit verify --db "$T/audit.db" >/dev/null || fail "audit chain"
echo "PASS commit-then-crash"
