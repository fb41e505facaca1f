#!/usr/bin/env bash
# make demo-plant works as the README says: two stations share a
# throw-away registry, the device IDs both lines present get one
# certificate each, the losing station is told where and when, and the
# server is gone afterwards.
. "$(dirname "$0")/lib.sh"

KEYLINE_DEMO_DIR=$T/demo "$top/scripts/demo-plant" >"$T/out" 2>&1 ||
	fail "demo-plant failed: $(tail -20 "$T/out")"
# Which station wins each of the two shared IDs is a race: together they
# pass 6 boards and refuse 2, whoever won which.
passed=$(sed -n 's/^station-[ab]: \([0-9]\) passed, .*/\1/p' "$T/out" | paste -sd+ | bc)
refused=$(sed -n 's/^station-[ab]: [0-9] passed, \([0-9]\) refused.*/\1/p' "$T/out" | paste -sd+ | bc)
[ "$passed" = 6 ] && [ "$refused" = 2 ] ||
	fail "not 6 passes and 2 refusals: $(grep '^station-' "$T/out")"
[ "$(grep -c 'per the plant registry' "$T/out")" = 2 ] ||
	fail "the two refusals do not come from the registry: $(cat "$T/out")"
[ "$(grep -Ec ' provisioned \| station-[ab] ' "$T/out")" = 6 ] ||
	fail "the registry does not list 6 provisioned devices"
[ ! -e "$T/demo/pg/data/postmaster.pid" ] || fail "the demo left its server running"
echo "PASS demo-plant"
