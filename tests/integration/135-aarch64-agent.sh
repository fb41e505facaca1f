#!/usr/bin/env bash
# The board agent cross-built for aarch64 (make agent-aarch64,
# docs/cross-build.md) provisions end to end with the ordinary x86
# station: two boards of a virtual line whose agents are the aarch64
# binary under qemu-aarch64 (user-mode emulation), each loading the arm64
# libp11, libcrypto and SoftHSM module.  Checked from the outside: the
# binary is an AArch64 ELF, the processes answering on the ptys are
# qemu-aarch64 running it with the arm64 libraries mapped, the audit log
# has each board's passed row for the certificate it holds, and each
# token (written by arm64 SoftHSM, read here by the amd64 one) holds the
# key at 02 that the certificate at 01 and client.pem carry.
#
# KEYLINE_AGENT_AARCH64 names the agent (default: built here with make,
# build/aarch64/bin/keyline-agent); KEYLINE_ARM64_ROOT the library prefix
# with the arm64 SoftHSM module that scripts/setup unpacks.
. "$(dirname "$0")/lib.sh"

root=${KEYLINE_ARM64_ROOT:-/opt/keyline/arm64-root}
if [ -z "${KEYLINE_AGENT_AARCH64:-}" ]; then
	make -C "$top" --no-print-directory -s build/aarch64/bin/keyline-agent ||
		fail "make build/aarch64/bin/keyline-agent"
	KEYLINE_AGENT_AARCH64=$top/build/aarch64/bin/keyline-agent
fi
agent=$(realpath "$KEYLINE_AGENT_AARCH64") || fail "no agent $KEYLINE_AGENT_AARCH64"
command -v qemu-aarch64 >/dev/null || fail "qemu-aarch64 not installed: run scripts/setup"
[ -e "$root/usr/lib/softhsm/libsofthsm2.so" ] ||
	fail "no arm64 SoftHSM under $root: run scripts/setup"

# ---- the binary is for aarch64
# file names the ELF machine; e_machine (bytes 18-19) is EM_AARCH64, 183.
# The x86 agent fails both (file: "x86-64", e_machine 62).
desc=$(file -b "$agent")
[[ $desc == "ELF 64-bit LSB "*", ARM aarch64, "* ]] ||
	fail "$agent is not an aarch64 ELF: $desc"
[ "$(od -An -tu2 -j18 -N2 "$agent" | tr -d ' ')" = 183 ] ||
	fail "$agent: e_machine is not EM_AARCH64"

# ---- a line of two boards whose agents run under qemu-aarch64
line_setup "$T" 2
printf '#!/bin/sh\nexec qemu-aarch64 -L "%s" "%s" "$@"\n' "$root" "$agent" \
    >"$T/agent-aarch64"
chmod 755 "$T/agent-aarch64"
KEYLINE_AGENT=$T/agent-aarch64 line_start "$T"

"$KL" batch --config "$T/station.conf" >"$T/out.jsonl" 2>"$T/err.log" ||
	fail "batch exited $? (expected 0): $(tail -n 5 "$T/err.log")"
s=$(summary "$T/out.jsonl")
[ "$(jq .passed <<<"$s")" = 2 ] && [ "$(jq .failed <<<"$s")" = 0 ] ||
	fail "summary: $s"

# ---- the agents that answered are the aarch64 binary under emulation
# Each slot's agent is still running: qemu-aarch64 (the wrapper exec'd
# it) with the aarch64 agent as its guest, and in its memory map the
# arm64 libraries and SoftHSM module, never the amd64 ones.
n=0
for p in $(pgrep -P "$(cat "$T/jig.bgpid")" || true); do
	[ "$(readlink "/proc/$p/exe")" = "$(realpath "$(command -v qemu-aarch64)")" ] ||
		fail "agent pid $p is $(readlink "/proc/$p/exe"), not qemu-aarch64"
	tr '\0' '\n' <"/proc/$p/cmdline" | grep -qxF "$agent" ||
		fail "agent pid $p does not run $agent: $(tr '\0' ' ' <"/proc/$p/cmdline")"
	maps=$(awk '{ print $6 }' "/proc/$p/maps" | sort -u)
	for lib in "$root/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so" \
	    /usr/lib/aarch64-linux-gnu/libp11.so.3 \
	    /usr/lib/aarch64-linux-gnu/libcrypto.so.3; do
		grep -qxF "$(realpath "$lib")" <<<"$maps" ||
			fail "agent pid $p has not mapped $lib"
	done
	if grep -q '/x86_64-linux-gnu/softhsm/' <<<"$maps"; then
		fail "agent pid $p has the amd64 SoftHSM mapped"
	fi
	n=$((n + 1))
done
[ "$n" = 2 ] || fail "expected 2 agents under the jig, found $n"

# ---- the audit log and each board
"$KL" audit verify --db "$T/audit.db" >"$T/verify.out" ||
	fail "audit verify: $(cat "$T/verify.out")"
for i in 1 2; do
	b=$(board_dir "$i")
	serial=$(basename "$b")
	imp=$b/rootfs/var/sota/import
	id="$(sed -n 's/^model *= *//p' "$b/board.conf")-$serial"

	[ "$(ls -A "$imp" | sort | tr '\n' ' ')" = "client.pem gateway.url root.crt " ] ||
		fail "$serial: import dir holds: $(ls -A "$imp")"
	openssl verify -CAfile "$T/ca/fleet-root.pem" "$imp/client.pem" >/dev/null ||
		fail "$serial: client.pem does not chain to the fleet root"
	subj=$(openssl x509 -in "$imp/client.pem" -noout -subject -nameopt RFC2253)
	[ "$subj" = "subject=CN=$id" ] || fail "$serial: subject $subj, want CN=$id"
	cmp -s "$imp/root.crt" "$T/ca/gateway-root.pem" || fail "$serial: root.crt"
	[ "$(cat "$imp/gateway.url")" = "https://gateway.ota.example.com:8443" ] ||
		fail "$serial: gateway.url"

	# One passed row for the device, after the issuance of the
	# certificate the board holds.
	[ "$(sqlite3 "$T/audit.db" "SELECT count(*) FROM events WHERE
	    device_id = '$id' AND step = 'done' AND outcome = 'passed'")" = 1 ] ||
		fail "$serial: no single passed row for $id in the audit log"
	want=$(openssl x509 -in "$imp/client.pem" -noout -serial | cut -d= -f2)
	got=$(sqlite3 "$T/audit.db" "SELECT cert_serial FROM events WHERE
	    device_id = '$id' AND step = 'issued'")
	[ "${got^^}" = "${want^^}" ] ||
		fail "$serial: audit log issued '$got', the board holds $want"

	# The token the arm64 SoftHSM wrote, read with the amd64 one.
	pin=$(board_pin "$b")
	[ "$(board_p11 "$b" --login --pin "$pin" --list-objects --type privkey 2>/dev/null |
	    grep -c '^Private Key Object')" = 1 ] ||
		fail "$serial: not exactly one private key in the token"
	board_p11 "$b" --login --pin "$pin" --read-object --type pubkey --id 02 \
	    -o "$T/pub.der" >/dev/null 2>&1 || fail "$serial: no public key at 02"
	openssl pkey -pubin -inform DER -in "$T/pub.der" -outform DER -out "$T/pub.tok" 2>/dev/null ||
		fail "$serial: token public key does not parse"
	openssl x509 -in "$imp/client.pem" -noout -pubkey |
		openssl pkey -pubin -outform DER -out "$T/pub.crt"
	cmp -s "$T/pub.tok" "$T/pub.crt" ||
		fail "$serial: the token's public key is not the certificate's"
	board_p11 "$b" --read-object --type cert --id 01 -o "$T/cert.der" \
	    >/dev/null 2>&1 || fail "$serial: no certificate object at ID 01"
	openssl x509 -in "$imp/client.pem" -outform DER -out "$T/cert.crt"
	cmp -s "$T/cert.der" "$T/cert.crt" ||
		fail "$serial: certificate object differs from client.pem"
done
echo "ok: 2 aarch64 agents under qemu-aarch64 provisioned"
