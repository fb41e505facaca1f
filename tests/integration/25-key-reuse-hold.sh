#!/usr/bin/env bash
# One key, one device; and a slot that behaves like no real line does is
# held for the operator.
#  1. A second board presenting the first board's key (a cloned image with
#     one software key) under another serial is refused, audited under
#     both device IDs, and no certificate is issued for it.
#  2. In line mode, a fake board that reports a new serial at every HELLO
#     (a new device ID each time) is held after more boards than a person
#     swaps in the window: the alert reaches the event stream, the audit
#     log, /api/v1/slots and /metrics, and the slot starts nothing more.
#  3. The same fake board with one key: every board after the first is
#     refused for its key, and the slot is held after failures in a row.
. "$(dirname "$0")/lib.sh"

issued() { sqlite3 "$1/audit.db" "SELECT count(*) FROM events WHERE step='issued'"; }

# --- 1. two boards, one key
line_setup "$T" 2
line_start "$T"
"$KL" batch --config "$T/station.conf" --count 1 >"$T/first.jsonl" || fail "first board"
b1=$(board_dir 1)
b2=$(board_dir 2)
id1="$(sed -n 's/^model *= *//p' "$b1/board.conf")-$(basename "$b1")"
id2="$(sed -n 's/^model *= *//p' "$b2/board.conf")-$(basename "$b2")"
line_stop "$T"
# Board 2 runs on board 1's token (its key at 02) and answers KEYGEN with it.
sed -i "s|^directories.tokendir = .*|directories.tokendir = $b1/tokens|" "$b2/softhsm2.conf"
sed -i "s/^token_label = .*/token_label = board-$(basename "$b1")/" "$b2/board.conf"
sed -i 's/^fault = .*/fault = same-key/' "$b2/board.conf"
line_start "$T"
set +e
"$KL" batch --config "$T/station.conf" >"$T/second.jsonl"
rc=$?
set -e
[ $rc = 1 ] || fail "a board with another device's key: exit $rc, expected 1"
grep '"event":"failed"' "$T/second.jsonl" | grep "\"device_id\":\"$id2\"" |
	grep '"error":"duplicate"' | grep -q "key refused: it belongs to device $id1" ||
	fail "board 2 not refused for board 1's key"
[ "$(issued "$T")" = 1 ] || fail "a certificate was issued for a reused key"
[ "$(sqlite3 "$T/audit.db" "SELECT count(*) FROM events WHERE device_id='$id2' AND step='keygen' AND outcome='refused' AND error LIKE '%$id1%'")" = 1 ] ||
	fail "the refusal is not audited under the board's device ID"
[ "$(sqlite3 "$T/audit.db" "SELECT count(*) FROM events WHERE device_id='$id1' AND step='key-reuse' AND error LIKE '%$id2%'")" = 1 ] ||
	fail "the reuse is not audited under the key's own device ID"
line_stop "$T"

# --- 2. a board that turns over faster than a person swaps boards
# Slot 2 holds an ordinary board: once it has passed, its probes are the
# clock that says the station had its chances to start more in slot 1.
L=$T/line
on_exit_line "$L"
line_setup "$L" 2
lb=$L/boards/$(sed -n 1p "$L/boards.list")
clock=$(sed -n 2p "$L/boards.list")
sed -i 's/^fault = .*/fault = serial-per-hello/' "$lb/board.conf"
sed -i 's|^power_off_ms = 300$|power_off_ms = 300\nhold_boards = 3\nhold_window_s = 600\nhold_failures = 0|' "$L/station.conf"
PORT=$(free_port) || fail "no free port"
api_token "$L/api.token"
AUTH="Authorization: Bearer $(cat "$L/api.token")"
printf '\n[http]\nenabled = yes\nport = %s\ntoken_file = api.token\n' "$PORT" >>"$L/station.conf"
line_start_traced "$L"
bg_start "$KL" batch --line --config "$L/station.conf" >"$L/out.jsonl" 2>"$L/err"
KPID=$!
# -readonly: a poll before the station made its log must not create it
# (root's, which the station, its own user, could then not write).
held() { [ "$(sqlite3 -readonly "$L/audit.db" "SELECT count(*) FROM events WHERE step='hold'" 2>/dev/null || echo 0)" -gt "$1" ]; }
slot1_boards() { sqlite3 -readonly "$L/audit.db" "SELECT count(*) FROM events WHERE step='identify' AND slot=1"; }
wait_for -p "$KPID" 60 "slot 1 to be held" held 0
n=$(slot1_boards)
[ "$n" = 4 ] || fail "$n boards started before the hold, expected 4 (more than hold_boards = 3)"
grep '"event":"info"' "$L/out.jsonl" | grep -q 'slot 1 held: 4 boards started' ||
	fail "no alert in the event stream"
curl -sf -H "$AUTH" "http://127.0.0.1:$PORT/api/v1/slots" >"$L/slots.json" &&
    jq -e ".slots[0].held == true" "$L/slots.json" >/dev/null ||
	fail "/api/v1/slots does not show the slot held"
# (Whole answers to files first: grep -q stops reading early, and curl
# writing into a closed pipe would fail the test under pipefail.)
curl -sf -H "$AUTH" "http://127.0.0.1:$PORT/metrics" >"$L/metrics" &&
    grep -qx "keyline_slots_held 1" "$L/metrics" ||
	fail "/metrics does not count the held slot"
# Held: while the board in slot 2 answers three more probes, slot 1
# starts nothing (a slot that is not held starts the next fake board at
# its first probe).
wait_for -p "$KPID" 60 "the board in slot 2 to pass" \
    eval "grep '\"event\":\"passed\"' '$L/out.jsonl' | grep -q '\"slot\":2'"
wait_probes "$L" 3 "$clock"
[ "$(slot1_boards)" = 4 ] || fail "a held slot started another board"
kill -INT "$KPID"
wait "$KPID" || true
line_stop "$L"

# --- 3. the same fake board with one key: refusals, then a hold
sed -i 's/^fault = .*/fault = clone/' "$lb/board.conf"
sed -i -e 's/^hold_boards = 3$/hold_boards = 0/' -e 's/^hold_failures = 0$/hold_failures = 3/' "$L/station.conf"
grep -q '^hold_failures = 3$' "$L/station.conf" || fail "conf"
line_start "$L"
before=$(issued "$L")
holds=$(sqlite3 "$L/audit.db" "SELECT count(*) FROM events WHERE step='hold'")
bg_start "$KL" batch --line --config "$L/station.conf" >"$L/out2.jsonl" 2>"$L/err2"
KPID=$!
wait_for -p "$KPID" 60 "slot 1 to be held for failures" held "$holds"
kill -INT "$KPID"
wait "$KPID" || true
[ "$(issued "$L")" = "$before" ] || fail "a cloned key got a certificate"
[ "$(grep '"event":"failed"' "$L/out2.jsonl" | grep -c 'key refused: it belongs to device')" = 3 ] ||
	{ grep '"event":"\(failed\|passed\|info\)"' "$L/out2.jsonl" | cut -c1-400 >&2
	  fail "expected three boards refused for their key before the hold"; }
grep '"event":"info"' "$L/out2.jsonl" | grep -q 'slot 1 held: 3 boards in a row failed' ||
	fail "no alert for failures in a row"
"$KL" audit verify --db "$L/audit.db" >/dev/null || fail "audit chain"
echo "PASS key-reuse-hold"
