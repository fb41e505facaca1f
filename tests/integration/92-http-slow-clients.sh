#!/usr/bin/env bash
# The status API under 500 slow clients: each sends a request line and
# then one header line a second, never finishing its head (slowloris),
# from ten loopback addresses 127.0.0.2..11, reconnecting whenever it is
# closed; then 16 from a single address.  Meanwhile a well-behaved client on 127.0.0.1 (the MES) asks
# /healthz and /api/v1/status: every request must be answered, quickly.
# The station's stderr gets summary lines, not a line per refused
# connection; /metrics counts what the limits turned away.
. "$(dirname "$0")/lib.sh"

command -v perl >/dev/null || fail "perl is missing"
ATTACKERS=${KEYLINE_SLOW_CLIENTS:-500}
ATTACK_S=${KEYLINE_ATTACK_S:-15}

line_setup "$T" 1
free_port() {
	local p i
	for ((i = 0; i < 50; i++)); do
		p=$((20000 + RANDOM % 40000))
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			echo "$p"
			return 0
		fi
	done
	return 1
}
PORT=$(free_port) || fail "no free port"
U=http://127.0.0.1:$PORT
api_token "$T/api.token"
AUTH="Authorization: Bearer $(cat "$T/api.token")"
# No slots: only the API is under test.  Default limits (16 connections,
# 4 per address).
sed -i -e '/^\[slots\]/,/^\[/{/^[0-9]/d}' "$T/station.conf"
cat >>"$T/station.conf" <<CONF

[http]
enabled = yes
port = $PORT
token_file = api.token
CONF

"$KL" batch --line --config "$T/station.conf" >"$T/out.jsonl" 2>"$T/station.err" &
KPID=$!
started=$SECONDS
APID=
cleanup() {
	[ -n "$APID" ] && kill "$APID" 2>/dev/null && wait "$APID" 2>/dev/null
	kill -TERM "$KPID" 2>/dev/null && wait "$KPID" 2>/dev/null
	line_cleanup "$T"
	rm -rf "$T"
}
trap cleanup EXIT

for ((i = 0; i < 100; i++)); do
	[ "$(curl -s -o /dev/null -w '%{http_code}' "$U/healthz")" = 200 ] && break
	kill -0 "$KPID" 2>/dev/null || { cat "$T/station.err" >&2; fail "station died"; }
	sleep 0.1
done

# The attackers: one perl process, non-blocking sockets, one header line
# per second per connection, reconnect 20 ms after being closed.
cat >"$T/slow.pl" <<'PERL'
use strict; use warnings;
use IO::Socket::INET; use IO::Select; use Time::HiRes qw(time sleep);
my ($port, $n, $secs, $first, $naddr) = @ARGV;
my (@s, @next, @last);
my ($connects, $closed, $lines) = (0, 0, 0);
my $end = time + $secs;
$SIG{TERM} = sub { $end = 0 };
$next[$_] = 0 for 0 .. $n - 1;
while (time < $end) {
	my $now = time;
	for my $i (0 .. $n - 1) {
		if (!$s[$i]) {
			next if $now < $next[$i];
			my $src = "127.0.0." . ($first + $i % $naddr);
			my $c = IO::Socket::INET->new(PeerAddr => "127.0.0.1",
			    PeerPort => $port, LocalAddr => $src, Proto => "tcp",
			    Timeout => 1);
			if (!$c) { $next[$i] = $now + 0.2; next; }
			$c->blocking(0);
			$connects++;
			$s[$i] = $c;
			$last[$i] = $now;
			syswrite($c, "GET /healthz HTTP/1.1\r\nHost: x\r\n");
		} elsif ($now - $last[$i] >= 1) {
			$last[$i] = $now;
			if (!defined syswrite($s[$i], "X-Slow-$lines: x\r\n")) {
				close($s[$i]); $s[$i] = undef; $closed++;
				$next[$i] = $now + 0.02;
				next;
			}
			$lines++;
		}
		# Closed by the server?  (readable with 0 bytes, or an error)
		my $buf;
		my $r = sysread($s[$i], $buf, 4096);
		if (defined $r && $r == 0 || !defined $r && !$!{EAGAIN}) {
			close($s[$i]); $s[$i] = undef; $closed++;
			$next[$i] = $now + 0.02;
		}
	}
	sleep 0.02;
}
my $open = grep { $_ } @s;
print "connects=$connects closed=$closed lines=$lines open=$open\n";
PERL
perl "$T/slow.pl" "$PORT" "$ATTACKERS" "$ATTACK_S" 2 10 >"$T/slow.out" 2>&1 &
APID=$!
sleep 4	# every slot taken, the tricklers settled in

# The MES, from 127.0.0.1, while the attack goes on.
ok=0; bad=0; max=0; sum=0; n=0
t_end=$((SECONDS + ATTACK_S - 8))
while [ $SECONDS -lt $t_end ]; do
	for path in /healthz /api/v1/status; do
		out=$(curl -s -o "$T/body" -w '%{http_code} %{time_total}' \
		    --max-time 5 -H "$AUTH" "$U$path" || true)
		code=${out%% *}
		ms=$(echo "${out##* } * 1000 / 1" | bc)
		n=$((n + 1))
		sum=$((sum + ms))
		[ "$ms" -gt "$max" ] && max=$ms
		if [ "$code" = 200 ]; then
			ok=$((ok + 1))
		else
			bad=$((bad + 1))
			echo "good client: $path gave '$out'" >&2
		fi
	done
	sleep 0.2
done
wait "$APID" || true
APID=
cat "$T/slow.out"
echo "good client: $ok of $n answered 200, mean $((sum / n)) ms, max $max ms"
[ "$bad" = 0 ] || fail "$bad of $n requests of the good client were not answered during the attack"
# At least one request a second over the attack window.
[ "$ok" -ge 10 ] || fail "only $ok requests made"
connects=$(sed -n 's/.*connects=\([0-9]*\).*/\1/p' "$T/slow.out")
[ "${connects:-0}" -ge "$ATTACKERS" ] || fail "the attack did not run: $(cat "$T/slow.out")"

# The issue's case: 16 tricklers (max_connections) from one address take
# only its 4 connections; the good client is answered at once.
perl "$T/slow.pl" "$PORT" 16 6 12 1 >"$T/slow16.out" 2>&1 &
APID=$!
sleep 2
for path in /healthz /api/v1/status; do
	out=$(curl -s -o /dev/null -w '%{http_code} %{time_total}' --max-time 2 \
	    -H "$AUTH" "$U$path" || true)
	[ "${out%% *}" = 200 ] || fail "16 tricklers from one address: $path gave '$out'"
done
wait "$APID" || true
APID=

# What the limits did, counted.
[ "$(curl -s -o "$T/metrics" -w '%{http_code}' -H "$AUTH" "$U/metrics")" = 200 ] || fail "metrics"
for reason in per_address_limit full taken_over header_timeout; do
	v=$(sed -n "s/^keyline_http_connections_dropped_total{reason=\"$reason\"} //p" "$T/metrics")
	[ "${v:-0}" -gt 0 ] || fail "no connection dropped for $reason: $(grep dropped "$T/metrics")"
done
grep dropped "$T/metrics"

# stderr: per 10 s at most 5 of libmicrohttpd's lines and one summary,
# whatever the number of connections (today's code: one line each).
lines=$(grep -c 'http:' "$T/station.err" || true)
allowed=$(( ((SECONDS - started) / 10 + 1) * 6 + 1 ))
echo "station stderr: $lines http lines in $((SECONDS - started)) s (at most $allowed)"
grep 'http:' "$T/station.err" | sort | uniq -c | sort -rn | head -n 8
[ "$lines" -le "$allowed" ] ||
	fail "$lines http log lines for one attack: not rate-limited"
grep -q 'connections in the last 10 s:' "$T/station.err" || fail "no summary line"
echo "PASS http-slow-clients"
