#!/usr/bin/env bash
# Re-provisioning is atomic on the board.  The station is killed (SIGKILL)
# at every step boundary of a --reprovision run, one board per boundary;
# then, separately, each board's agent is killed at a boundary, and four
# more boards lose power at each point inside their COMMIT.  After each crash every board holds one
# consistent set, its old one or its new one (TLS key 02, certificate 01,
# client.pem and the RSA Uptane key 03 all of one generation), and running
# the same command again just works: boards that had committed are
# recovered without a second certificate, the others are provisioned.
. "$(dirname "$0")/lib.sh"

# The requests of a re-provisioning run, in order: protocol version 1
# (KEYLINE_PROTOCOL_MAX=1), or version 2, where the CSR comes with
# KEYGEN's answer, PUT_FILE is sent behind KEYGEN, the certificate goes
# with COMMIT and the read-back comes back in its answer.
if [ "${KEYLINE_PROTOCOL_MAX:-}" = 1 ]; then
	STEPS=(KEYGEN UPTANE_KEYGEN CSR PUT_FILE PUT_CERT COMMIT FILE_HASH SIGN)
	ca_i=4		# the first boundary after the CA request is on record
else
	STEPS=(KEYGEN UPTANE_KEYGEN PUT_FILE COMMIT SIGN)
	ca_i=4
fi
n=${#STEPS[@]}	# boards 1..n: one per boundary
for ((commit_i = 1; commit_i <= n; commit_i++)); do
	[ "${STEPS[$((commit_i - 1))]}" = COMMIT ] && break
done
N=$((n + 4))	# boards n+1..n+4: power lost inside COMMIT
line_setup "$T" "$N"
sed -i 's|^cert_id = 01$|cert_id = 01\nuptane_key = yes|' "$T/station.conf"
# A dead agent should cost seconds, not twenty; but twelve boards making
# RSA keys at once in SoftHSM, beside another test on two cores, can take
# more than 3 s for a key (the first run failed so under load).
conf_set "$T/station.conf" link timeout_ms 2500
conf_set "$T/station.conf" link attempts 2
conf_set "$T/station.conf" link keygen_timeout_ms 20000
# A board that dies must stay down until the test powers it on.
conf_add "$T/station.conf" jig power_retry no
line_start "$T"
"$KL" batch --config "$T/station.conf" >"$T/first.jsonl" || fail "first run"

ids=()
for ((i = 1; i <= N; i++)); do
	b=$(board_dir $i)
	ids+=("$(sed -n 's/^model *= *//p' "$b/board.conf")-$(basename "$b")")
done
reprov_args() {
	local id
	for id in "${ids[@]}"; do printf -- '--reprovision\n%s\n' "$id"; done
}
mapfile -t RA < <(reprov_args)
RA8=("${RA[@]:0:$((2 * n))}")	# --reprovision for boards 1..n

# One line per board: the SHA-256 of the certificate at 01, or why the
# board holds no consistent set.
board_set() {
	local b=$1 d=$T/chk
	rm -rf "$d" && mkdir -p "$d"
	board_p11 "$b" --read-object --type cert --id 01 -o "$d/cert.der" \
	    >/dev/null 2>&1 || { echo "no certificate at 01"; return; }
	board_p11 "$b" --read-object --type pubkey --id 02 -o "$d/key.der" \
	    >/dev/null 2>&1 || { echo "no public key at 02"; return; }
	board_p11 "$b" --read-object --type pubkey --id 03 -o "$d/up.der" \
	    >/dev/null 2>&1 || { echo "no public key at 03"; return; }
	openssl x509 -inform DER -in "$d/cert.der" -noout -pubkey >"$d/certpub.pem"
	openssl pkey -pubin -inform DER -in "$d/key.der" -out "$d/keypub.pem"
	cmp -s "$d/certpub.pem" "$d/keypub.pem" ||
	    { echo "key 02 is not the certificate's"; return; }
	openssl x509 -in "$b/rootfs/var/sota/import/client.pem" -outform DER \
	    -out "$d/pem.der" 2>/dev/null ||
	    { echo "no client.pem"; return; }
	cmp -s "$d/pem.der" "$d/cert.der" ||
	    { echo "client.pem is not the certificate at 01"; return; }
	for f in root.crt gateway.url; do
		[ -s "$b/rootfs/var/sota/import/$f" ] || { echo "no $f"; return; }
	done
	echo "$(sha256sum <"$d/cert.der" | cut -c1-64) $(sha256sum <"$d/up.der" | cut -c1-64)"
}
declare -A OLD
for ((i = 1; i <= N; i++)); do
	OLD[$i]=$(board_set "$(board_dir $i)")
	[ "${#OLD[$i]}" = 129 ] || fail "board $i after the first run: ${OLD[$i]}"
done

# The board holds its old set or a whole new one (certificate and Uptane
# key both new); prints old or new.
check_board() {
	local i=$1 what=$2 now
	now=$(board_set "$(board_dir $i)")
	echo "$now" >"$T/set.$i"	# what the board holds now, for later
	[ "${#now}" = 129 ] || fail "$what: board $i holds no consistent set: $now"
	if [ "$now" = "${OLD[$i]}" ]; then
		echo old
	elif [ "${now%% *}" != "${OLD[$i]%% *}" ] &&
	    [ "${now##* }" != "${OLD[$i]##* }" ]; then
		echo new
	else
		fail "$what: board $i mixes generations: $now vs ${OLD[$i]}"
	fi
}

# Board i gets fault FAULTS[i] (none when unset); the agents start again.
declare -A FAULTS
set_faults() {
	local i b k ready
	line_stop "$T"
	for ((i = 1; i <= N; i++)); do
		b=$(board_dir $i)
		rm -f "$b"/.fault-* "$b/.paused" "$b/.answered"
		sed -i "s/^fault = .*/fault = ${FAULTS[$i]:-none}/" "$b/board.conf"
	done
	ready=$(grep -c "ready on" "$T/jig.log" || true)
	line_start "$T"
	# Every agent has finished its start-up recovery (the jig's "ready"
	# only says they were started).
	for ((k = 0; k < 1200; k++)); do
		[ "$(grep -c "ready on" "$T/jig.log" || true)" -ge $((ready + N)) ] &&
		    return 0
		sleep 0.05
	done
	fail "the agents did not come up"
}
wait_paused() {
	local i k all
	for ((k = 0; k < 1200; k++)); do
		all=1
		for ((i = 1; i <= n; i++)); do
			[ -e "$(board_dir $i)/.paused" ] || all=0
		done
		[ $all = 1 ] && return 0
		sleep 0.05
	done
	fail "not every board reached its boundary"
}
issued() {
	sqlite3 "$T/audit.db" "SELECT count(*) FROM events WHERE step='issued'"
}

# --- 1. The station dies at each boundary.
echo "[$SECONDS s] part 1: the station dies"
for ((i = 1; i <= n; i++)); do FAULTS[$i]=pause-before:${STEPS[$((i - 1))]}; done
set_faults
"$KL" batch --config "$T/station.conf" --count $n "${RA8[@]}" >"$T/kill.jsonl" 2>"$T/kill.err" &
st=$!
wait_paused
kill -KILL "$st"
wait "$st" 2>/dev/null || true
for ((i = 1; i <= n; i++)); do rm -f "$(board_dir $i)/.paused"; done
# The agents finish the request the station sent before it died.
for ((k = 0; k < 1200; k++)); do
	all=1
	for ((i = 1; i <= n; i++)); do
		[ -e "$(board_dir $i)/.answered" ] || all=0
	done
	[ $all = 1 ] && break
	sleep 0.05
done
[ $all = 1 ] || fail "the agents did not finish the requests they were sent"
declare -A AFTER
for ((i = 1; i <= n; i++)); do
	AFTER[$i]=$(check_board $i "station killed before ${STEPS[$((i - 1))]}")
	echo "station killed before ${STEPS[$((i - 1))]}: board $i holds its ${AFTER[$i]} set"
done
# Before COMMIT the old set stays; from COMMIT on the new one is in place.
for ((i = 1; i <= n; i++)); do
	want=old
	[ $i -ge $commit_i ] && want=new
	[ "${AFTER[$i]}" = $want ] ||
	    fail "station killed before ${STEPS[$((i - 1))]}: board $i holds its ${AFTER[$i]} set, expected $want"
done

# The station lists what is in doubt at start-up, then resolves it.
echo "[$SECONDS s] re-run"
before=$(issued)
"$KL" batch --config "$T/station.conf" --count $n "${RA8[@]}" >"$T/rerun1.jsonl" ||
	fail "re-running the same command after the station died: exit $?"
doubt=$(grep -c '"event":"in_doubt"' "$T/rerun1.jsonl" || true)
# In doubt: every board whose CA request was on record (CSR answered).
[ "$doubt" = $((n - ca_i + 1)) ] || fail "$doubt devices listed in doubt at start-up, expected $((n - ca_i + 1))"
for ((i = 1; i <= n; i++)); do
	[ "$(check_board $i "after the re-run")" = new ] ||
	    fail "board $i does not hold a new set after the re-run"
done
rec=$(sqlite3 "$T/audit.db" "SELECT count(*) FROM events WHERE step='recover' AND outcome='provisioned'")
[ "$rec" = $((n - commit_i + 1)) ] || fail "$rec boards recovered as provisioned, expected $((n - commit_i + 1)) (COMMIT and after)"
notp=$(sqlite3 "$T/audit.db" "SELECT count(*) FROM events WHERE step='recover' AND outcome='not_provisioned' AND error LIKE '%revoke it%'")
[ "$notp" = $((commit_i - ca_i)) ] || fail "$notp boards found not provisioned with a certificate to revoke, expected $((commit_i - ca_i))"
# No second certificate for a board that had committed: new ones for
# those that had not (killed before COMMIT).
[ $(($(issued) - before)) = $((commit_i - 1)) ] ||
	fail "$(($(issued) - before)) certificates issued in the re-run, expected $((commit_i - 1))"
for ((i = 1; i <= n; i++)); do
	b=$(board_dir $i)
	board_p11 "$b" --list-objects 2>/dev/null | grep -qi "ff4b4c50" &&
	    fail "board $i keeps staged objects"
	ls -A "$b/rootfs/var/sota/import" | grep -q keyline &&
	    fail "board $i keeps a journal or temp file"
done

# --- 2. The boards die: each agent at a boundary (boards 1..n), or the
# board's power inside COMMIT at each of its four points (n+1..n+4).
echo "[$SECONDS s] part 2: the boards die"
# A board killed before KEYGEN keeps the station waiting for the key
# timeout, twice (attempts = 2): 20 s each cost this test 40 s of its
# 90.  Only boards n+1..n+4 make keys in this part (four RSA keys, not
# twelve), so 6 s, twice, still leaves room on a loaded machine.
conf_set "$T/station.conf" link keygen_timeout_ms 6000
for ((i = 1; i <= 4; i++)); do FAULTS[$((n + i))]=die-in-commit:$i; done
set_faults
# Boards 1..n now hold the sets the re-run above gave them.
for ((i = 1; i <= n; i++)); do OLD[$i]=$(cat "$T/set.$i"); done
"$KL" batch --config "$T/station.conf" "${RA[@]}" >"$T/akill.jsonl" 2>&1 &
st=$!
wait_paused
for ((i = 1; i <= n; i++)); do
	pkill -KILL -f -- "--config $(board_dir $i)/board.conf" || fail "no agent for board $i"
done
wait "$st" && fail "the station passed boards that died"
for ((i = n + 1; i <= N; i++)); do
	id=${ids[$((i - 1))]}
	grep '"event":"failed"' "$T/akill.jsonl" | grep "\"device_id\":\"$id\"" |
	    grep -q "finds out which when it sees the board again" ||
	    fail "board $i: a COMMIT without an answer is not reported as in doubt"
	[ "$(sqlite3 "$T/audit.db" "SELECT count(*) FROM events WHERE step='clear' AND device_id='$id'")" = 0 ] ||
	    fail "board $i, whose COMMIT got no answer, was cleared"
done
FAULTS=()
set_faults	# power every board on again, without faults
for ((i = 1; i <= N; i++)); do
	if [ $i -gt $n ]; then
		want=new; why="power lost at commit point $((i - n))"
	elif [ $i -gt $commit_i ]; then	# after its COMMIT
		want=new; why="agent killed before ${STEPS[$((i - 1))]}"
	else
		want=old; why="agent killed before ${STEPS[$((i - 1))]}"
	fi
	got=$(check_board $i "$why")
	[ "$got" = $want ] || fail "$why: board $i holds its $got set, expected $want"
done
[ "$(grep -c "finished an interrupted commit" "$T/jig.log")" -ge 4 ] ||
	fail "the agents did not finish their interrupted commits"
# Without --reprovision: boards 1..commit_i still hold the set they passed
# with and are already provisioned.  The COMMIT board's went unanswered;
# it is the same board back in the same slot, so its COMMIT did not take.
"$KL" batch --config "$T/station.conf" --count $commit_i >"$T/plain.jsonl" ||
	fail "boards holding the sets they passed with: exit $?"
[ "$(grep -c '"event":"already_provisioned"' "$T/plain.jsonl")" = $commit_i ] ||
	fail "boards 1-$commit_i not reported as already provisioned"
sqlite3 "$T/audit.db" "SELECT error FROM events WHERE step='recover' AND outcome='not_provisioned' AND device_id='${ids[$((commit_i - 1))]}'" |
	grep -q "back in the same slot; its COMMIT did not take" ||
	fail "board $commit_i's unanswered COMMIT not resolved as not taken"
echo "[$SECONDS s] re-run"
before=$(issued)
"$KL" batch --config "$T/station.conf" "${RA[@]}" >"$T/rerun2.jsonl" ||
	fail "re-running the same command after the boards died: exit $?"
for ((i = 1; i <= N; i++)); do
	[ "$(check_board $i "after the re-run")" = new ] ||
	    fail "board $i holds no new set after the re-run"
done
# New certificates only for the boards that kept their old set.
[ $(($(issued) - before)) = $commit_i ] ||
	fail "$(($(issued) - before)) certificates issued in the re-run, expected $commit_i"
"$KL" audit verify --db "$T/audit.db" >/dev/null || fail "audit chain"

# A journal the agent did not write whole (cut short, no newline) stops
# the agent with a message instead of being half carried out.
line_stop "$T"
printf 'keyline-commit 1\nid 02\nfile client.p' \
    >"$(board_dir 1)/rootfs/var/sota/import/.keyline-commit"
line_start "$T"
for ((k = 0; k < 100; k++)); do
	grep -q "keyline-commit cannot be read or does not parse" "$T/jig.log" && break
	sleep 0.1
done
[ $k -lt 100 ] || fail "an agent started on a damaged journal"
[ "$(check_board 1 "a damaged journal")" = new ] ||
	fail "a damaged journal changed the board"
echo "PASS reprovision-kill"
