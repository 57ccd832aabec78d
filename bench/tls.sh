#!/usr/bin/env bash
# bench/tls.sh: nhscrypt check-tls against sslscan and testssl.sh on the
# same local nginx endpoints, in one run.
#   1. 50 nginx endpoints on 127.0.0.1 (the test certificate cases, mixed
#      good and bad), certificates made with openssl
#   2. nhscrypt check-tls over all of them at once
#   3. sslscan over each, one after the other (the usual loop)
#   4. testssl -p -S on a few, extrapolated to all (labelled as such)
#   5. the protocol and weak-cipher verdicts of nhscrypt and sslscan compared
# Prints the times and the ratios. Targets: >= 20x faster than the sslscan
# loop, the same verdicts, the whole set in under 3 s.
# Knobs: BENCH_ENDPOINTS (50), BENCH_TESTSSL (2; 0 skips testssl),
# BENCH_ROUNDS (3, best of for nhscrypt), NHSCRYPT (default bin/nhscrypt).
set -euo pipefail
cd "$(dirname "$0")/.."
n=${BENCH_ENDPOINTS:-50}
ntestssl=${BENCH_TESTSSL:-2}
rounds=${BENCH_ROUNDS:-3}
nhscrypt=${NHSCRYPT:-bin/nhscrypt}
go build -o "$nhscrypt" ./cmd/nhscrypt
nhscrypt=$(realpath "$nhscrypt")
for tool in openssl sslscan bc; do
	command -v $tool >/dev/null || { echo "$tool is not installed (make bench-deps installs it)" >&2; exit 1; }
done
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || { echo "nginx is not installed (make bench-deps)" >&2; exit 1; }
work=$(mktemp -d /tmp/nhscrypt-tlsbench.XXXXXX)
fixture="$work/tlsfixture"
go build -o "$fixture" ./tlscheck/tlstest/tlsfixture
cleanup() {
	[ -f "$work/nginx/nginx.pid" ] && kill "$(cat "$work/nginx/nginx.pid")" 2>/dev/null || true
	sleep 0.2
	rm -rf "$work"
}
trap cleanup EXIT

now() { date +%s.%N; }
elapsed() { echo "$(now) - $1" | bc -l; }
fmt() { printf '%.2f' "$1"; }

"$fixture" -dir "$work" -n "$n"
mapfile -t targets < <(cut -d' ' -f1 "$work/targets.txt")
echo "nhscrypt: $("$nhscrypt" version)"
echo "sslscan:  $(sslscan --version 2>/dev/null | sed 's/\x1b\[[0-9;]*m//g' | tr -s ' \t\n' ' ')"
echo "machine:  $(nproc) cores, $(uname -r); $n nginx endpoints on 127.0.0.1 ($(sed 's/.* //' "$work/targets.txt" | sort | uniq -c | awk '{printf "%s %s, ", $1, $2}' | sed 's/, $//'))"
echo

# 2. nhscrypt, best of $rounds.
best=''
for _ in $(seq 1 "$rounds"); do
	t0=$(now)
	rc=0
	"$nhscrypt" --json check-tls --ca-file "$work/root.pem" "${targets[@]}" > "$work/nhscrypt.json" 2> "$work/nhscrypt.err" || rc=$?
	t=$(elapsed "$t0")
	if [ "$rc" != 4 ]; then echo "nhscrypt exited $rc, want 4 (failures found):" >&2; cat "$work/nhscrypt.err" >&2; exit 1; fi
	if [ -z "$best" ] || [ "$(echo "$t < $best" | bc -l)" = 1 ]; then best=$t; fi
done
t_n=$best
echo "nhscrypt check-tls, all $n at once (best of $rounds): $(fmt "$t_n") s"

# 3. sslscan, one endpoint after the other.
mkdir -p "$work/sslscan"
t0=$(now)
for a in "${targets[@]}"; do
	sslscan --no-colour --xml="$work/sslscan/$a.xml" "$a" > /dev/null
done
t_s=$(elapsed "$t0")
echo "sslscan loop over $n:                      $(fmt "$t_s") s ($(fmt "$(echo "$t_s / $n" | bc -l)") s an endpoint)"

# 4. testssl.sh on a few, extrapolated.
if [ "$ntestssl" -gt 0 ] && command -v testssl >/dev/null; then
	t0=$(now)
	for a in "${targets[@]:0:$ntestssl}"; do
		testssl --quiet --color 0 --warnings off -p -S "$a" > /dev/null 2>&1 || true
	done
	t_t=$(elapsed "$t0")
	t_tx=$(echo "$t_t / $ntestssl * $n" | bc -l)
	echo "testssl -p -S on $ntestssl:                      $(fmt "$t_t") s; EXTRAPOLATED to $n: $(fmt "$t_tx") s"
fi
echo

echo "ratio sslscan loop / nhscrypt:        $(fmt "$(echo "$t_s / $t_n" | bc -l)")x   (target >= 20x)"
[ -n "${t_tx:-}" ] && echo "ratio testssl (extrapolated) / nhscrypt: $(fmt "$(echo "$t_tx / $t_n" | bc -l)")x"
echo "whole set under 3 s:                  $([ "$(echo "$t_n < 3" | bc -l)" = 1 ] && echo yes || echo NO)"
"$fixture" -dir "$work" -compare
