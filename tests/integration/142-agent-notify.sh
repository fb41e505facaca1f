#!/usr/bin/env bash
# The board agent under systemd (Type=notify, fixtures/board/keyline-agent.service):
#  - the unit passes systemd-analyze verify with nothing printed;
#  - a board loses power inside its COMMIT (die-in-commit:2: the journal
#    is on its disk, no import file yet).  Its agent started again with
#    NOTIFY_SOCKET, the recovery slowed down (each rename held 0.4 s by
#    strace), sends READY=1 once, and only when the interrupted commit is
#    finished: at READY=1 the journal is gone and client.pem is in place,
#    so aktualizr, ordered after the unit, never reads a half-committed
#    import directory.  STOPPING=1 follows SIGTERM;
#  - an import directory the agent does not trust still gives READY=1,
#    with a STATUS= that says changes are refused;
#  - without NOTIFY_SOCKET (every other test, the QEMU board) nothing
#    changes.
. "$(dirname "$0")/lib.sh"

agent=$KEYLINE_BIN/keyline-agent

# ---- the unit file ----------------------------------------------------------
mkdir "$T/units"
sed "s|^ExecStart=/usr/bin/keyline-agent |ExecStart=$agent |" \
    "$top/fixtures/board/keyline-agent.service" >"$T/units/keyline-agent.service"
grep -q '^Type=notify$' "$T/units/keyline-agent.service" || fail "the unit is not Type=notify"
systemd-analyze verify --man=no "$T/units/keyline-agent.service" >"$T/verify.out" 2>&1 ||
	{ cat "$T/verify.out" >&2; fail "systemd-analyze verify failed"; }
# (141 shows that a misspelt key does print a warning.)
[ ! -s "$T/verify.out" ] || { cat "$T/verify.out" >&2; fail "systemd-analyze verify printed warnings"; }

# ---- a commit cut at its second point --------------------------------------
line_setup "$T" 1
b=$(board_dir 1)
imp=$b/rootfs/var/sota/import
sed -i "s/^fault = .*/fault = die-in-commit:2/" "$b/board.conf"
grep -q '^fault = die-in-commit:2$' "$b/board.conf" || fail "fault not set"
# The dead board stays down: nothing may finish its commit but the agent
# started below.
conf_add "$T/station.conf" jig power_retry no
# A dead board should cost seconds.
conf_set "$T/station.conf" link timeout_ms 2000
conf_set "$T/station.conf" link attempts 2
line_start "$T"
"$KL" batch --config "$T/station.conf" >"$T/first.jsonl" 2>&1 &&
	fail "the station passed a board that lost power in its COMMIT"
line_stop "$T"
[ -f "$imp/.keyline-commit" ] || fail "no journal on the board after commit point 2"
[ ! -e "$imp/client.pem" ] || fail "client.pem already in place at commit point 2"
# The release agent, as on a board: no fault line at all.
sed -i '/^fault = /d' "$b/board.conf"

# socat -v writes each datagram it receives, after a header line.
rm -f "$T/notify.sock"
: >"$T/notify.log"
socat -u -v "UNIX-RECV:$T/notify.sock" OPEN:/dev/null 2>>"$T/notify.log" &
track_pid $!
wait_for 10 "the notify socket" test -S "$T/notify.sock"
# A tty for the agent: one end of a pty pair.
socat -d PTY,link="$T/tty",raw,echo=0 PTY,link="$T/tty-station",raw,echo=0 \
    2>"$T/socat-pty.log" &
track_pid $!
wait_for 10 "the pty pair" test -e "$T/tty"

# Each rename held 0.4 s: the recovery renames the staged files into
# place (and then removes the journal), so a READY=1 sent before it ends
# would arrive more than a second before the journal goes.
NOTIFY_SOCKET=$T/notify.sock bg_start strace -f -o /dev/null \
    -e trace=renameat,renameat2,rename -e inject=renameat,renameat2,rename:delay_enter=400000 \
    "$agent" --config "$b/board.conf" --tty "$T/tty" 2>"$T/agent.log"
ag=$!
wait_for -p "$ag" -l "$T/agent.log" 60 "READY=1" grep -q 'READY=1' "$T/notify.log"
# At once: the commit the power cut interrupted is finished.
[ ! -e "$imp/.keyline-commit" ] || fail "READY=1 before the interrupted commit was finished (journal still there)"
[ -s "$imp/client.pem" ] || fail "READY=1 before client.pem was in place"
grep -q "finished an interrupted commit" "$T/agent.log" ||
	fail "the agent did not say it finished the commit"
grep -q 'STATUS=ready for the station' "$T/notify.log" || fail "no STATUS= with READY=1"
grep -q 'STOPPING=1' "$T/notify.log" && fail "STOPPING=1 before the stop"
# The files are the committed set: the certificate is the one the audit
# log recorded for the board.
fpr=$(openssl x509 -in "$imp/client.pem" -outform DER | sha256sum | cut -d' ' -f1)
[ "$(sqlite3 "$T/audit.db" "SELECT count(*) FROM events WHERE cert_fpr='$fpr'")" -ge 1 ] ||
	fail "client.pem after the recovery is not the certificate on record"
# SIGTERM to the agent itself, strace's child.
kill -TERM "$(pgrep -P "$ag" -f -- "--config $b/board.conf")" || fail "no agent under strace"
wait_for 10 "STOPPING=1" grep -q 'STOPPING=1' "$T/notify.log"
wait "$ag" 2>/dev/null || true
[ "$(grep -o 'READY=1' "$T/notify.log" | wc -l)" = 1 ] || fail "READY=1 sent more than once"

# ---- an import directory the agent does not trust ---------------------------
sleep 0.2	# socat has written all it got
: >"$T/notify.log"
chmod o+w "$imp"
NOTIFY_SOCKET=$T/notify.sock bg_start "$agent" --config "$b/board.conf" --tty "$T/tty" \
    2>"$T/agent2.log"
ag=$!
wait_for -p "$ag" -l "$T/agent2.log" 30 "READY=1 (unsafe import directory)" \
    grep -q 'READY=1' "$T/notify.log"
grep -q 'STATUS=refusing changes' "$T/notify.log" ||
	fail "READY=1 for an unsafe import directory does not say changes are refused"
kill -TERM "$ag"
wait "$ag" 2>/dev/null || true
chmod o-w "$imp"

echo "PASS agent-notify"
