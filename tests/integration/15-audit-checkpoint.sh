#!/usr/bin/env bash
# Signed checkpoints of the audit head: boards are provisioned with
# [audit] checkpoint_key_id set, then the log is rewritten the way someone
# with the file and without the station token would (triggers dropped, a
# row changed, every hash recomputed).  The chain alone still verifies;
# verify --checkpoint-cert fails and names the checkpoint.  A clean log
# passes, and a log whose checkpoints were deleted says so loudly.
. "$(dirname "$0")/lib.sh"

RECHAIN=$KEYLINE_BIN/../tools/rechain
[ -x "$RECHAIN" ] || fail "no $RECHAIN (make san builds it)"

line_setup "$T" 4
cat >>"$T/station.conf" <<CONF

[audit]
checkpoint_key_id = 11
checkpoint_cert = ca/audit-checkpoint.pem
checkpoint_every = 10
CONF
CERT=$T/ca/audit-checkpoint.pem
ROOT=$T/ca/fleet-root.pem
openssl verify -CAfile "$ROOT" "$CERT" >/dev/null ||
	fail "scripts/devca made no checkpoint certificate under the fleet root"
line_start "$T"
"$KL" batch --config "$T/station.conf" >"$T/out.jsonl" ||
	fail "batch exited $? (expected 0)"
[ "$(jq .passed <<<"$(summary "$T/out.jsonl")")" = 4 ] ||
	fail "summary: $(summary "$T/out.jsonl")"
db=$T/audit.db
rows=$(sqlite3 "$db" "SELECT count(*) FROM events")
[ "$rows" -eq 48 ] || fail "$rows rows for 4 boards, expected 48"
# start (row 0), after every 10th row, stop (row 48).  A "rows"
# checkpoint signs the head when it runs: other slots may have appended a
# row or two since the 10th, so the k-th is at row 10k or a little later.
got=$(sqlite3 "$db" "SELECT group_concat(reason || ':' || row_id, ' ')
    FROM (SELECT reason, row_id FROM checkpoints ORDER BY id)")
set -- $got
[ $# = 6 ] && [ "$1" = start:0 ] && [ "$6" = stop:48 ] ||
	fail "checkpoints: $got"
k=1
for c in "$2" "$3" "$4" "$5"; do
	id=${c#rows:}
	[ "${c%%:*}" = rows ] && [ "$id" -ge $((10 * k)) ] && [ "$id" -lt $((10 * k + 10)) ] ||
		fail "checkpoint $k: $c (of $got)"
	k=$((k + 1))
done
# The signing helper went away with the station.
if pgrep -f "keyline batch --config $T/station.conf" >/dev/null; then
	fail "a keyline process outlived the batch run"
fi

# Clean log: verified, newest checkpoint reported.
"$KL" audit verify --db "$db" --checkpoint-cert "$CERT" --root "$ROOT" \
    --require-checkpoints >"$T/ok.out" 2>"$T/ok.err" ||
	fail "verify failed on a clean log: $(cat "$T/ok.out" "$T/ok.err")"
grep -q "^audit chain ok: 48 rows" "$T/ok.out" || fail "$(cat "$T/ok.out")"
grep -q "^checkpoints ok: 6 signed, newest 6 (stop, .*) at row 48$" \
    "$T/ok.out" || fail "no newest checkpoint: $(cat "$T/ok.out")"

# A certificate that does not chain to the given root is refused.
if "$KL" audit verify --db "$db" --checkpoint-cert "$CERT" \
    --root "$T/ca/gateway-root.pem" >/dev/null 2>"$T/root.err"; then
	fail "verify accepted a checkpoint certificate outside --root"
fi
grep -q "does not chain" "$T/root.err" || fail "$(cat "$T/root.err")"

# The rewrite: row 15's device ID changed, every hash after it rebuilt.
cp "$db" "$T/rw.db"
"$RECHAIN" "$T/rw.db" 15 device_id forged-device >/dev/null ||
	fail "rechain failed"
[ "$(sqlite3 "$T/rw.db" "SELECT device_id FROM events WHERE id = 15")" = \
    forged-device ] || fail "rechain did not change row 15"
# Without checkpoints this is exactly the gap: the chain is consistent.
"$KL" audit verify --db "$T/rw.db" >/dev/null ||
	fail "the rewritten chain should verify on its own"
if "$KL" audit verify --db "$T/rw.db" --checkpoint-cert "$CERT" \
    --root "$ROOT" >"$T/rw.out" 2>"$T/rw.err"; then
	fail "verify --checkpoint-cert passed on a rewritten log"
fi
# The first checkpoint at or after row 15 is the one that fails.
cid=$(sqlite3 "$T/rw.db" "SELECT id FROM checkpoints WHERE row_id >= 15 ORDER BY id LIMIT 1")
rid=$(sqlite3 "$T/rw.db" "SELECT row_id FROM checkpoints WHERE id = $cid")
grep -q "audit checkpoint $cid fails: row $rid no longer has the hash signed" \
    "$T/rw.err" || fail "no checkpoint named: $(cat "$T/rw.err")"

# Forging the checkpoint too needs the token: a copied signature fails.
sqlite3 "$T/rw.db" "UPDATE checkpoints SET row_hash = (SELECT row_hash
    FROM events WHERE id = checkpoints.row_id) WHERE row_id > 0"
if "$KL" audit verify --db "$T/rw.db" --checkpoint-cert "$CERT" \
    2>"$T/rw2.err" >/dev/null; then
	fail "verify passed with checkpoints re-pointed at the rewritten rows"
fi
grep -q "audit checkpoint $cid fails: signature does not verify" \
    "$T/rw2.err" || fail "$(cat "$T/rw2.err")"

# Deleting the checkpoints is loud, and a failure when they are required.
cp "$db" "$T/nock.db"
sqlite3 "$T/nock.db" "DROP TABLE checkpoints"
"$KL" audit verify --db "$T/nock.db" --checkpoint-cert "$CERT" \
    >"$T/nock.out" 2>"$T/nock.err" ||
	fail "verify without --require-checkpoints should pass the chain"
grep -q "NO CHECKPOINTS" "$T/nock.err" || fail "no warning: $(cat "$T/nock.err")"
grep -q "^no checkpoints$" "$T/nock.out" || fail "$(cat "$T/nock.out")"
if "$KL" audit verify --db "$T/nock.db" --checkpoint-cert "$CERT" \
    --require-checkpoints >/dev/null 2>&1; then
	fail "--require-checkpoints passed a log without checkpoints"
fi
# Options that only make sense with the certificate are usage errors.
set +e
"$KL" audit verify --db "$db" --require-checkpoints >/dev/null 2>&1
rc=$?
set -e
[ "$rc" -eq 2 ] || fail "--require-checkpoints without a certificate exited $rc"

# A key and certificate that do not belong together stop the station.
cp "$T/station.conf" "$T/bad.conf"
conf_set "$T/bad.conf" audit checkpoint_cert ca/fleet-root.pem
set +e
"$KL" batch --config "$T/bad.conf" >"$T/bad.out" 2>"$T/bad.err"
rc=$?
set -e
[ "$rc" -eq 2 ] || fail "a mismatched checkpoint_cert: exit $rc, expected 2"
grep -q "checkpoint" "$T/bad.err" || fail "$(cat "$T/bad.err")"
echo "PASS audit checkpoint"
