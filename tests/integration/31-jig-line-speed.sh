#!/usr/bin/env bash
# keyline-jig run --baud emulates the line speed: one board provisioned at
# 4800 baud takes at least the line time of the busier direction (the
# relay delivers in packets, but never faster than B/10 bytes a second),
# and not grossly more (a relay that loses line time when it wakes late).
# The same board unthrottled is the control: it must finish under the
# lower bound, or the bound proves nothing.
. "$(dirname "$0")/lib.sh"

baud=4800
line_setup "$T" 1
b=$(board_dir 1)
id="$(sed -n 's/^model *= *//p' "$b/board.conf")-$(basename "$b")"

line_start "$T"
line_wait_boards "$T"
"$KL" batch --config "$T/station.conf" >"$T/fast.jsonl" ||
	fail "the unthrottled run failed"
line_stop "$T"
line_start "$T" --baud "$baud"
line_wait_boards "$T"
"$KL" batch --config "$T/station.conf" --reprovision "$id" >"$T/slow.jsonl" ||
	fail "the run at $baud baud failed"
line_stop "$T"

fast=$(summary "$T/fast.jsonl")
slow=$(summary "$T/slow.jsonl")
wire=$(jq -r .wire_bytes_per_board <<<"$slow")
t_fast=$(jq -r .elapsed_s <<<"$fast")
t_slow=$(jq -r .elapsed_s <<<"$slow")
# Both directions share the wire bytes; the busier one carries at least
# half, less the 20 ms burst each direction starts with.
low=$(echo "0.9 * ($wire / 2) * 10 / $baud" | bc -l)
# Both directions one after the other, plus room for a loaded machine.
high=$(echo "1.5 * $wire * 10 / $baud + 3" | bc -l)
echo "wire $wire bytes: unthrottled $t_fast s, at $baud baud $t_slow s" \
    "(bounds $low .. $high s)"
[ "$(echo "$t_fast < $low" | bc -l)" = 1 ] ||
	fail "control: the unthrottled run took $t_fast s, not under $low s"
[ "$(echo "$t_slow >= $low" | bc -l)" = 1 ] ||
	fail "at $baud baud $wire bytes took $t_slow s: faster than the line ($low s)"
[ "$(echo "$t_slow <= $high" | bc -l)" = 1 ] ||
	fail "at $baud baud $wire bytes took $t_slow s: slower than $high s"
grep -q "^keyline-jig: cpu: relay [0-9.]* s, agents [0-9.]* s" "$T/jig.log" ||
	fail "the jig did not report its CPU at stop"
echo "PASS jig-line-speed"
