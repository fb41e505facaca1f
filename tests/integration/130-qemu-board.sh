#!/usr/bin/env bash
# Two Linux boards in QEMU (scripts/qemu-board: Debian's kernel, the agent
# on the guest's ttyS1, SoftHSM and /var/sota on an ext4 disk image)
# provisioned by one station over their UARTs; their power switched
# through QMP behind keyline-jig's control protocol (qemu-board power).
#
#  - Board 1's secure element hangs in its first KEYGEN: the station
#    power-cycles the slot (a QMP reset: the guest boots again from its
#    disk) and the board passes.  The moment its audit log has the COMMIT
#    answer (write ok), its QEMU is killed (SIGKILL: a power cut).  Its
#    disk, as the kernel would mount it (journal replayed), holds the
#    three import files and the token holds the key and the certificate
#    the audit log recorded.  The guest mounts ext4 with a 300 s commit
#    interval, so what the agent did not fsync would be gone.
#  - Board 2 loses power inside its COMMIT (die-in-commit:2: the journal
#    is durable, the first key moved): its QEMU is killed as the agent
#    dies.  Powered on again through the power switch (which launches a
#    killed QEMU again from its disk image), the agent finishes the
#    commit and the station's second run finds each board holding the
#    one certificate it was issued: none or all, never a mix.
#  - Board 1 then uses its credentials from inside the guest: openssl
#    with the PKCS#11 engine, the key in its token, client.pem, root.crt
#    and gateway.url, over a virtio-serial port bridged to a gateway
#    stand-in (openssl s_server -Verify) on the host's loopback; the
#    server sees CN = device ID, verified against the fleet root.
. "$(dirname "$0")/lib.sh"

QB=$top/scripts/qemu-board
agent=${KEYLINE_QEMU_AGENT:-$KEYLINE_AGENT}
# Boards, slots and station.conf in one directory, as with the virtual
# jig: the station's [jig] control = jig.sock is qemu-board's socket.
"$top/scripts/devca" "$T" "$(line_pin_file "$T")"
"$QB" init --dir "$T" --boards 2 --agent "$agent" --restart-s 30 \
    --fault-at 1:hang-in-keygen-once --fault-at 2:die-in-commit:2 \
    >"$T/init.log" 2>&1 || fail "qemu-board init: $(cat "$T/init.log")"
line_write_conf "$T" 2
# Where the station runs as an ordinary user (KEYLINE_STATION_USER), what
# line_setup gives it: its token and its PIN; qemu-board gives it the
# boards' ptys and the power switch's socket.
[ -z "${KEYLINE_STATION_USER:-}" ] ||
	chown -R "$KEYLINE_STATION_USER:" "$T/station" "$(dirname "$(line_pin_file "$T")")"
# A hung KEYGEN is given up after 2 x 2 s; a HELLO waits 2 x 30 s, which
# covers a board booting again after its power cycle on a busy machine
# (5 s idle, 30 s seen with other suites running).  A board whose QEMU is
# killed is seen at once (the pty hangs up), not after a timeout.
conf_set "$T/station.conf" link keygen_timeout_ms 2000
conf_set "$T/station.conf" link attempts 2
conf_set "$T/station.conf" link timeout_ms 30000
on_exit "'$QB' stop --dir '$T'"
bg_start "$QB" power --dir "$T" 2>"$T/power.err"
wait_for -l "$T/power.err" 10 "the power switch's socket" test -S "$T/jig.sock"

b1=$T/boards/KQ000001 b2=$T/boards/KQ000002
id1=qemu-board-KQ000001 id2=qemu-board-KQ000002
t0=$SECONDS
"$QB" start --dir "$T" || fail "the boards did not boot"
echo "boot: $((SECONDS - t0)) s ($("$QB" accel))"

# -readonly: a query must never create the station's audit log before it does.
q() { sqlite3 -readonly "$T/audit.db" "$1"; }
rows() { q "SELECT count(*) FROM events WHERE board_serial = '$1' AND step = '$2' AND outcome = '$3'" 2>/dev/null || echo 0; }

# ---- first run: power cycle, then power cuts ----------------------------
bg_start "$KL" batch --config "$T/station.conf" >"$T/out1.jsonl" 2>"$T/err1.log"
st=$!
cut1= cut2=
cuts() {
	if [ -z "$cut1" ] && [ "$(rows KQ000001 write ok)" -ge 1 ]; then
		"$QB" kill --dir "$T" --slot 1 && cut1=1
	fi
	if [ -z "$cut2" ] && grep -q "power lost at commit point 2" "$b2/console.log"; then
		"$QB" kill --dir "$T" --slot 2 && cut2=1
	fi
	[ -n "$cut1" ] && [ -n "$cut2" ]
}
wait_for -p "$st" -l "$T/err1.log" -l "$b1/console.log" -l "$b2/console.log" \
    180 "board 1's COMMIT answer and board 2's death in COMMIT" cuts
set +e
wait "$st"
rc=$?
set -e
[ $rc -eq 1 ] || fail "first run: exit $rc, want 1 (board 2 failed in COMMIT)"
echo "first run: $((SECONDS - t0)) s"

# Board 1 was power-cycled through QMP once, and audited.
grep -q "slot 1: power cycle" "$T/power.log" || fail "the power switch saw no cycle of slot 1"
grep '"event":"info"' "$T/out1.jsonl" | grep '"slot":1' | grep -q "power-cycled the slot" ||
	fail "no power-cycle event for slot 1"
[ "$(rows KQ000001 power info)" = 1 ] || fail "board 1's power cycle is not audited"
[ "$(grep -c "fault injection: hanging in KEYGEN" "$b1/console.log")" = 1 ] ||
	fail "board 1 did not hang exactly once: $(grep fault "$b1/console.log")"
grep -q "finished an interrupted commit" "$b2/console.log" &&
	fail "board 2's agent came back before its power was cut"
[ "$(rows KQ000002 write ok)" = 0 ] || fail "board 2's COMMIT was answered"

# What the audit log says each board was issued.
issued() { q "SELECT $2 FROM events WHERE board_serial = '$1' AND step = 'issued'"; }
[ "$(q "SELECT count(*) FROM events WHERE step = 'issued'")" = 2 ] ||
	fail "want one certificate per board: $(q "SELECT board_serial, cert_serial FROM events WHERE step = 'issued'")"

# check_board SLOT ID SERIAL: the powered-off board's disk holds the three
# import files and, in its token, the key and certificate the audit log
# recorded for it; no commit journal or staged file is left.
check_board() {
	local slot=$1 id=$2 serial=$3 d=$T/disk$1 imp p11 fpr kfpr
	rm -rf "$d"
	"$QB" inspect --dir "$T" --slot "$slot" --out "$d" || fail "$serial: cannot read its disk"
	imp=$d/sota/import
	[ "$(ls -A "$imp" | sort | tr '\n' ' ')" = "client.pem gateway.url root.crt " ] ||
		fail "$serial: after the power cut the import dir holds: $(ls -A "$imp" | tr '\n' ' ')"
	fpr=$(openssl x509 -in "$imp/client.pem" -outform DER | sha256sum | cut -d' ' -f1)
	[ "$fpr" = "$(issued "$serial" cert_fpr)" ] ||
		fail "$serial: client.pem is not the certificate the audit log issued"
	[ "$(openssl x509 -in "$imp/client.pem" -noout -serial | cut -d= -f2 | tr A-F a-f)" = \
	    "$(issued "$serial" cert_serial)" ] || fail "$serial: client.pem's serial"
	cmp -s "$imp/root.crt" "$T/ca/gateway-root.pem" || fail "$serial: root.crt"
	[ "$(cat "$imp/gateway.url")" = "https://gateway.ota.example.com:8443" ] ||
		fail "$serial: gateway.url"
	p11() {
		SOFTHSM2_CONF=$d/softhsm2.conf pkcs11-tool --module "$MODULE" \
		    --token-label "board-$serial" --login --pin 1234 "$@"
	}
	p11 --read-object --type cert --id 01 -o "$d/cert.der" >/dev/null 2>&1 ||
		fail "$serial: no certificate object at 01"
	[ "$(sha256sum <"$d/cert.der" | cut -d' ' -f1)" = "$fpr" ] ||
		fail "$serial: the token's certificate at 01 is not client.pem's"
	p11 --read-object --type pubkey --id 02 -o "$d/pub.der" >/dev/null 2>&1 ||
		fail "$serial: no public key at 02"
	kfpr=$(sha256sum <"$d/pub.der" | cut -d' ' -f1)
	[ "$kfpr" = "$(q "SELECT key_fpr FROM events WHERE board_serial = '$serial' AND step = 'keygen' AND outcome = 'ok' ORDER BY id DESC LIMIT 1")" ] ||
		fail "$serial: the key at 02 is not the one the audit log recorded"
	[ "$(openssl x509 -in "$imp/client.pem" -noout -pubkey | openssl pkey -pubin -outform DER | sha256sum | cut -d' ' -f1)" = "$kfpr" ] ||
		fail "$serial: the certificate is not for the key at 02"
	p11 --list-objects --type privkey >"$d/priv.txt" 2>&1
	[ "$(grep -c '^Private Key Object' "$d/priv.txt")" = 1 ] && grep -q "ID: *02$" "$d/priv.txt" ||
		fail "$serial: want one private key, at 02: $(cat "$d/priv.txt")"
	[ "$(p11 --list-objects 2>/dev/null | grep -c '^ *ID:')" = 3 ] ||
		fail "$serial: staged objects left in the token: $(p11 --list-objects 2>&1)"
}

# Board 1 right after its power cut, before anything ran again.
check_board 1 "$id1" KQ000001
# Board 2 right after its cut: the commit was decided (its journal is on
# the disk), nothing of it is in place yet.
rm -rf "$T/raw2"
"$QB" inspect --dir "$T" --slot 2 --out "$T/raw2" || fail "board 2: cannot read its disk"
[ -f "$T/raw2/sota/import/.keyline-commit" ] ||
	fail "board 2: no commit journal on the disk after a cut inside COMMIT: $(ls -A "$T/raw2/sota/import")"
[ ! -e "$T/raw2/sota/import/client.pem" ] || fail "board 2: client.pem in place before the commit got there"

# ---- power on again: recovery, second run -------------------------------
# Through the power switch, as an operator's power key would: a board
# whose QEMU is gone is launched again from its disk image.
readies() { count "ready on /dev/ttyS1" "$1/console.log"; }
r1=$(readies "$b1") r2=$(readies "$b2")
pcs=()
for n in 1 2; do
	printf 'power-cycle %d 100' "$n" | socat -t 30 - \
	    "UNIX-SENDTO:$T/jig.sock,bind=$T/pc$n.sock" >"$T/pc$n.ans" &
	pcs+=($!)
	track_pid $!
done
for n in 1 2; do
	wait "${pcs[n - 1]}" || fail "slot $n: the power switch did not answer"
	[ "$(cat "$T/pc$n.ans")" = ok ] || fail "slot $n: power cycle answered '$(cat "$T/pc$n.ans")'"
done
grep -q "slot 2: power on (QEMU started again)" "$T/power.log" ||
	fail "the power switch did not launch board 2 again: $(cat "$T/power.log")"
booted() { [ "$(readies "$b1")" -gt "$r1" ] && [ "$(readies "$b2")" -gt "$r2" ]; }
wait_for -l "$b1/console.log" -l "$b2/console.log" 120 "both boards' agents after power on" booted
echo "power on: $((SECONDS - t0)) s"
grep -q "finished an interrupted commit" "$b2/console.log" ||
	fail "board 2's agent did not finish its commit: $(tail -n 5 "$b2/console.log")"
# ---- board 1 uses its credentials (while the station runs again) ------------
# The gateway stand-in: a server certificate for gateway.url's host from
# the gateway root (root.crt on the board), client certificates required
# and verified against the fleet root.
gw=gateway.ota.example.com
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$T/srv.key" -subj "/CN=$gw" -out "$T/srv.csr" 2>/dev/null
printf 'subjectAltName=DNS:%s\nextendedKeyUsage=serverAuth\n' "$gw" >"$T/srv.ext"
openssl x509 -req -in "$T/srv.csr" -CA "$T/ca/gateway-root.pem" \
    -CAkey "$T/ca/gateway-root.key" -CAcreateserial -days 1 \
    -extfile "$T/srv.ext" -out "$T/srv.pem" 2>/dev/null
srv=
srv_listening() { grep -qx ACCEPT "$T/srv.log" || ! _alive "$srv"; }
for _ in 1 2 3 4 5; do
	port=$(free_port) || fail "no free port"
	bg_start openssl s_server -accept "127.0.0.1:$port" -cert "$T/srv.pem" \
	    -key "$T/srv.key" -CAfile "$T/ca/fleet-root.pem" -Verify 2 \
	    -verify_return_error -naccept 1 -www >"$T/srv.log" 2>&1
	srv=$!
	wait_for 10 "openssl s_server to listen" srv_listening
	grep -qx ACCEPT "$T/srv.log" && break
	wait "$srv" || true
done
grep -qx ACCEPT "$T/srv.log" || fail "openssl s_server does not start: $(cat "$T/srv.log")"
# The board's gateway port, bridged to the server: the guest sees the
# host end connected and its client connects.
bg_start socat "UNIX-CONNECT:$b1/gateway.sock" "TCP4:127.0.0.1:$port"
"$KL" batch --config "$T/station.conf" >"$T/out2.jsonl" 2>"$T/err2.log" ||
	{ grep -E 'failed' "$T/out2.jsonl" >&2; fail "second run failed"; }
for s in KQ000001 KQ000002; do
	ev=$(grep -E '"event":"(passed|already_provisioned)"' "$T/out2.jsonl" | grep "\"serial\":\"$s\"") ||
		fail "$s: not passed in the second run: $(grep "$s" "$T/out2.jsonl" | tail -n 3)"
	[ "$(jq -r .cert_serial <<<"$ev")" = "$(issued "$s" cert_serial)" ] ||
		fail "$s: the second run's certificate is not the one issued before the cut: $ev"
done
[ "$(q "SELECT count(*) FROM events WHERE step = 'issued'")" = 2 ] ||
	fail "the second run issued a certificate"
echo "second run: $((SECONDS - t0)) s"

# The gateway saw board 1 while the station ran.
wait_for -l "$b1/console.log" 120 "board 1's gateway client" \
    grep -q "^gateway-client: mutual TLS with .*: \(ok\|failed\)" "$b1/console.log"
srv_gone() { ! _alive "$srv"; }
wait_for 10 "the gateway stand-in to finish its connection" srv_gone
grep -q "^gateway-client: mutual TLS with $gw: ok" "$b1/console.log" ||
	fail "board 1's mutual TLS failed: $(grep gateway-client "$b1/console.log")"
grep -A1 "^depth=0 CN = $id1\$" "$T/srv.log" | grep -qx "verify return:1" ||
	fail "the gateway did not verify board 1's certificate: $(cat "$T/srv.log")"
grep -q "^ *1 server accepts that finished" "$T/srv.log" ||
	fail "the gateway finished no handshake: $(cat "$T/srv.log")"
tr -d '\r' <"$b1/console.log" | grep -q "^gateway-client: | Subject: CN=$id1\$" ||
	fail "the gateway's page does not name board 1's certificate: $(grep gateway-client "$b1/console.log")"
echo "mutual TLS: $((SECONDS - t0)) s"

# ---- board 2's disk after its recovery, as a power cut leaves it ----------
"$QB" kill --dir "$T" --slot 2
check_board 2 "$id2" KQ000002
"$KL" audit verify --db "$T/audit.db" >/dev/null || fail "audit chain"
echo "PASS qemu-board ($((SECONDS - t0)) s)"
