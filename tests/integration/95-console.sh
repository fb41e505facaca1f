#!/usr/bin/env bash
# The operator console driven like an operator would: inside tmux over 4
# virtual boards, slot 2's board dying at COMMIT.  Keys go in with
# send-keys; every assertion reads the screen (capture-pane).  Covers: the
# line starts paused and runs on 's'; slots reach PASS/FAIL; the header
# counts; the failed slot's error in words and its step history in the
# detail view; a retry of the failed slot (the dead board fails a second
# time); power-cycle through the virtual jig; a resize to 80x24
# keeps slots, counts and the key list on screen; quit asks while a board
# is in flight, 'n' keeps running, 'y' stops the line (the in-flight board
# is rolled back and audited) and exits 0; 64 slots page at 80x24; a broken
# config exits 2 naming file, line and key.
. "$(dirname "$0")/lib.sh"

command -v tmux >/dev/null || fail "tmux is not installed (scripts/setup)"

line_setup "$T" 4 --fault-slot 2 --fault exit-before-commit
# A board that stops answering fails in 2 x 1.5 s; long enough to catch
# it in flight for the quit prompt.
conf_set "$T/station.conf" link timeout_ms 1500
conf_set "$T/station.conf" link attempts 2
line_start_traced "$T"

# A private tmux server, so nothing here touches the user's sessions.
sock=kl$$
tm() { tmux -L "$sock" "$@"; }
on_exit "tmux_stop $sock"

screen() { tm capture-pane -p -t "$1"; }

# wait_screen SESSION ERE [SECONDS]: until the screen matches.
wait_screen() {
	local s=$1 re=$2 secs=${3:-20} i
	for ((i = 0; i < secs * 5; i++)); do
		screen "$s" | grep -Eq -- "$re" && return 0
		sleep 0.2
	done
	echo "---- screen of $s:" >&2
	screen "$s" >&2 || true
	echo "---- console.log:" >&2
	tail -n 20 "$T/console.log" >&2 2>/dev/null || true
	fail "timed out after ${secs}s waiting for /$re/"
}

# on_screen SESSION ERE: the screen matches right now.
on_screen() {
	screen "$1" | grep -Eq -- "$2" || {
		screen "$1" >&2
		fail "not on screen: /$2/"
	}
}

# console SESSION COLS ROWS CONFIG [options]: run it in a detached
# session; when it ends, its exit code stays on screen.
console() {
	local s=$1 x=$2 y=$3 conf=$4
	shift 4
	tm new-session -d -x "$x" -y "$y" -s "$s" \
	    "'$KL' console --config '$conf' $*; echo \"console exit \$?\"; sleep 600"
}

console c 100 30 "$T/station.conf"
wait_screen c 'line PAUSED'
on_screen c 'q quit'
on_screen c 'r retry'
on_screen c 's start/pause'
on_screen c 'passed 0 +failed 0'
# Paused: no board is asked anything.  A paused engine does nothing a
# board could see, so its slot threads are the clock: each wakes once a
# probe period to look at the line state (a voluntary context switch of
# the thread, in /proc).  Once each has gone round twice, it has had its
# chances to probe, and no board may have answered a HELLO.
kpid=$(pgrep -P "$(tm display -p -t c '#{pane_pid}')" -x keyline) ||
	fail "cannot find the console's process"
wakeups() {	# PID: "TID SWITCHES" for each thread but the main one
	local t
	for t in /proc/"$1"/task/*; do
		if [ "${t##*/}" != "$1" ]; then
			echo "${t##*/} $(awk '/^voluntary_ctxt_switches/ { print $2 }' "$t/status")"
		fi
	done
}
woke_again() {	# PID N THREADS FILE: THREADS of FILE's threads woke N more times
	local tid n now k=0
	while read -r tid n; do
		now=$(awk '/^voluntary_ctxt_switches/ { print $2 }' \
		    "/proc/$1/task/$tid/status" 2>/dev/null) || continue
		[ "$now" -ge $((n + $2)) ] && k=$((k + 1))
	done <"$4"
	[ "$k" -ge "$3" ]
}
wakeups "$kpid" >"$T/wake0"
wait_for -l "$T/wake0" 10 "the 4 slot threads to go round twice while paused" \
    woke_again "$kpid" 2 4 "$T/wake0"
for b in $(cat "$T/boards.list"); do
	[ "$(hellos "$T" "$b")" = 0 ] || fail "board $b was probed while the line was paused"
done
on_screen c 'passed 0 +failed 0 +yield - +in flight 0'

tm send-keys -t c s
wait_screen c 'line RUNNING'
wait_screen c 'passed 3 +failed 1' 60
on_screen c 'yield 75\.0%'
for i in 1 3 4; do
	on_screen c "^[ >] ?$i PASS KL00000$i +done"
done
on_screen c '^[ >] ?2 FAIL KL000002 +write'
on_screen c '#2 +KL000002 +FAILED at write: '

# The detail view of slot 2 (selection starts on slot 1).
tm send-keys -t c j d
wait_screen c 'slot 2 details'
on_screen c '^ error +COMMIT exchange failed: [a-z]+'
on_screen c '^ validate +\+[0-9.]+m?s +[0-9.]+m?s +ok'
on_screen c '^ write +\+[0-9.]+m?s +[0-9.]+m?s +FAILED'
on_screen c '^ board +KL000002 .*device ID keyline-virtual-KL000002'

# Retry: the board is still dead, so the second attempt fails too.
tm send-keys -t c r
wait_screen c 'slot 2: retry requested'
wait_screen c 'passed 3 +failed 2' 30
tm send-keys -t c Escape
wait_screen c '^-- events \(newest first'
[ "$(screen c | grep -Ec '#2 +[^ ]+ +FAILED at')" -ge 2 ] || {
	screen c >&2
	fail "the event pane does not show the second attempt"
}
# Nothing to retry on a passed slot; the virtual jig switches slot power
# through its control socket, so p power-cycles the failed board.
tm send-keys -t c k r
wait_screen c 'slot 1: nothing to retry'
tm send-keys -t c j p
wait_screen c 'slot 2: power cycle requested'
wait_for 5 "the jig to power-cycle slot 2" grep -q "slot 2: power cycle" "$T/jig.log"
wait_screen c 'power cycle on the operator.s request: done'
[ "$(sqlite3 "$T/audit.db" "SELECT count(*) FROM events WHERE step='power' AND slot=2")" -ge 1 ] ||
	fail "the operator's power cycle is not audited"

# 80x24: slots, counts and the key list still fit.
tm resize-window -t c -x 80 -y 24
# Redrawn for 80 columns: the CA state ends the top line at its right
# edge (what was drawn for 100 columns is cut there, mid-header).
wait_screen c '^.{1,79} CA ok$'
on_screen c 'passed 3 +failed 2'
on_screen c '^[ >] ?4 PASS KL000004'
on_screen c 'q quit'
on_screen c 'r retry'
on_screen c 'a ack failure'
on_screen c 'p power-cycle'
[ "$(screen c | wc -l)" -le 24 ] || fail "screen taller than 24 lines"

# Quit while a board is in flight: asks; 'n' keeps the line running.
tm send-keys -t c r
wait_screen c 'in flight 1' 5
tm send-keys -t c q
wait_screen c 'quit\? .*\(y/n\)' 3
tm send-keys -t c n
wait_screen c 'quit cancelled'
on_screen c 'line RUNNING'
wait_screen c 'passed 3 +failed 3' 30
# Again, and this time 'y': the in-flight board is rolled back.
tm send-keys -t c r
wait_screen c 'in flight 1' 5
tm send-keys -t c q
wait_screen c 'quit\? .*\(y/n\)' 3
tm send-keys -t c y
wait_screen c 'console exit 0' 30
on_screen c 'line stopped: 3 passed, 4 failed, 0 already, 0 in flight'
[ "$(sqlite3 "$T/audit.db" "SELECT count(*) FROM events WHERE slot=2 AND outcome='failed' AND (error LIKE '%stopped by the operator%' OR error LIKE '%cancelled%')")" -ge 1 ] ||
	{ sqlite3 "$T/audit.db" "SELECT * FROM events WHERE outcome != 'ok'" >&2
	  fail "the board in flight at quit was not audited as rolled back"; }
"$KL" audit verify --db "$T/audit.db" >/dev/null || fail "audit chain broken"
for i in 1 3 4; do
	[ -s "$(board_dir $i)/rootfs/var/sota/import/client.pem" ] ||
		fail "board $i has no client.pem"
done
[ -z "$(ls "$(board_dir 2)/rootfs/var/sota/import")" ] ||
	fail "the failed board has visible files"

# 64 slots at 80x24 (5..64 have no device, and the line stays paused):
# the grid pages and the keys are listed.
awk '/^\[slots\]/ { print; for (i = 1; i <= 64; i++) print i " = slots/" i; skip = 1; next }
    skip && /^[0-9]+ = / { next } { print }' "$T/station.conf" >"$T/s64.conf"
console p 80 24 "$T/s64.conf"
wait_screen p 'line PAUSED'
on_screen p 'slots 1-28 of 64 +\(page 1/3'
on_screen p '^>? ?1 IDLE'
on_screen p '28 IDLE'
on_screen p 'q quit'
tm send-keys -t p NPage
wait_screen p 'slots 29-56 of 64 +\(page 2/3'
on_screen p '29 IDLE'
tm send-keys -t p q
wait_screen p 'console exit 0' 10

# A broken config: exit 2, the error names file, line and key.
cp "$T/station.conf" "$T/bad.conf"
line=$(grep -n '^baud = ' "$T/bad.conf" | cut -d: -f1)
sed -i 's/^baud = .*/baud = fast/' "$T/bad.conf"
set +e
"$KL" console --config "$T/bad.conf" </dev/null >"$T/out" 2>"$T/err"
rc=$?
set -e
[ $rc -eq 2 ] || fail "exit $rc for a bad config, want 2"
grep -qF "bad.conf:$line: [link] baud" "$T/err" || fail "error: $(cat "$T/err")"
set +e
"$KL" console >/dev/null 2>&1
rc=$?
set -e
[ $rc -eq 2 ] || fail "exit $rc without --config, want 2"
echo "PASS console"
