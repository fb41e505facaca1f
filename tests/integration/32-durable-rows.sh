#!/usr/bin/env bash
# The audit rows that gate an action are durable before it, whatever the
# rows queued behind them (docs/audit.md, "When rows are written"): a
# lone board, so no other slot's row can carry them to the file, and the
# station SIGKILLed while it waits on the board.
#   - version 1, waiting for PUT_FILE (after the CA, before COMMIT): the
#     `ca requested` and `issued` rows are in the file, with the
#     certificate's serial;
#   - version 2, waiting for SIGN (after COMMIT): `commit requested` is;
#   - waiting for KEYGEN (after the duplicate check): `identify ok` is, the
#     row the duplicate check reads up to, with only queued progress rows
#     after it.
# Progress rows queued after them may be lost; these may not.
. "$(dirname "$0")/lib.sh"

# run_case VERSION FAULT ROWS...: the station dies while the board is
# about to answer FAULT's request; each "step outcome" in ROWS must be
# on file.
run_case() {
	local version=$1 fault=$2 rows
	shift 2
	local d=$T/v$version-$fault b id
	rows=$(printf "'%s' " "$@")
	mkdir -p "$d"
	line_setup "$d" 1
	on_exit_line "$d"
	b=$(cd "$d/boards" && echo "$d/boards/$(ls | head -n 1)")
	board_protocol_max "$b" "$version"
	sed -i "s/^fault = .*/fault = pause-before:$fault/" "$b/board.conf"
	line_start "$d"
	id="$(sed -n 's/^model *= *//p' "$b/board.conf")-$(basename "$b")"
	bg_start "$KL" batch --config "$d/station.conf" >"$d/out.jsonl" 2>&1
	st=$!
	wait_for -p "$st" -l "$d/out.jsonl" 30 "the board to reach $fault" test -e "$b/.paused"
	kill -KILL "$st"
	wait "$st" 2>/dev/null || true
	for row in "$@"; do
		set -- $row
		[ "$(sqlite3 -readonly "$d/audit.db" "SELECT count(*) FROM events WHERE device_id='$id' AND step='$1' AND outcome='$2'")" = 1 ] ||
			fail "v$version, station killed before $fault: no '$1 $2' row on file: $(sqlite3 -readonly "$d/audit.db" "SELECT step || ' ' || outcome FROM events WHERE device_id='$id'" | tr '\n' ',')"
	done
	rm -f "$b/.paused"
	line_stop "$d"
	echo "v$version, killed before $fault: $rows on file"
}

run_case 1 PUT_FILE "ca requested" "issued ok"
# The certificate's serial went with the issuance row.
[ -n "$(sqlite3 -readonly "$T/v1-PUT_FILE/audit.db" "SELECT cert_serial FROM events WHERE step='issued'")" ] ||
	fail "the issued row has no certificate serial"
run_case 2 SIGN "ca requested" "issued ok" "commit requested"
run_case 2 KEYGEN "identify ok"
echo "PASS durable-rows"
