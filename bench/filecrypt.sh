#!/usr/bin/env bash
# bench/filecrypt.sh: nhscrypt against the age CLI on the same data, in one run.
#   1. a 1 GiB random file: encrypt and decrypt, nhscrypt vs age
#   2. a tree of 20,000 small files: nhscrypt encrypt --tree vs a
#      `find … -exec age` loop
# Prints throughput and the ratio nhscrypt/age (higher is better for
# nhscrypt). Targets: file ≥ 0.95×, tree ≥ 2×.
# Knobs: BENCH_DIR (default /var/tmp), BENCH_SIZE_MB (1024),
# BENCH_FILES (20000; 0 skips the tree), BENCH_ROUNDS (3), NHSCRYPT (default: bin/nhscrypt, built from this tree).
set -euo pipefail
cd "$(dirname "$0")/.."
size_mb=${BENCH_SIZE_MB:-1024}
nfiles=${BENCH_FILES:-20000}
rounds=${BENCH_ROUNDS:-3}
nhscrypt=${NHSCRYPT:-bin/nhscrypt}
[ -n "${NHSCRYPT:-}" ] || go build -o "$nhscrypt" ./cmd/nhscrypt
nhscrypt=$(realpath "$nhscrypt")
mktree=$(mktemp /tmp/nhscrypt-mktree.XXXXXX)
go build -o "$mktree" ./bench/mktree
for tool in age bc; do
	command -v $tool >/dev/null || { echo "$tool is not installed (make bench installs it)" >&2; exit 1; }
done
work=$(mktemp -d "${BENCH_DIR:-/var/tmp}/nhscrypt-bench.XXXXXX")
trap 'rm -rf "$work" "$mktree"' EXIT
cd "$work"

now() { date +%s.%N; }
# timeit VAR CMD…: run CMD, then sync (so both tools pay for writing their
# output to disk: nhscrypt fsyncs, age does not), store seconds in VAR.
timeit() {
	local var=$1; shift
	sync; local t0; t0=$(now)
	"$@"
	sync
	printf -v "$var" '%s' "$(echo "$(now) - $t0" | bc -l)"
}
# best VAR NEW: keep the smaller of two times in VAR.
best() { if [ -z "${!1:-}" ] || [ "$(echo "$2 < ${!1}" | bc -l)" = 1 ]; then printf -v "$1" '%s' "$2"; fi; }
rate() { echo "scale=1; $1 / $2" | bc -l; }
ratio() { echo "scale=2; $1 / $2" | bc -l; }

"$nhscrypt" keygen -o key.txt 2>/dev/null
rcpt=$("$nhscrypt" keygen -y key.txt)

echo "nhscrypt: $("$nhscrypt" version)"
echo "age:      $(age --version)"
echo "machine:  $(nproc) cores, $(uname -r), bench dir $work"
echo

echo "== 1. one ${size_mb} MiB random file (best of $rounds rounds, output synced to disk)"
head -c "$((size_mb << 20))" /dev/urandom > plain.bin
# Best of $rounds rounds, alternating which tool goes first.
t_nenc='' t_aenc='' t_ndec='' t_adec=''
for round in $(seq 1 "$rounds"); do
	rm -f n.age a.age n.out a.out
	if [ $((round % 2)) = 1 ]; then
		timeit t "$nhscrypt" encrypt -r "$rcpt" -o n.age plain.bin; best t_nenc "$t"
		timeit t age -r "$rcpt" -o a.age plain.bin; best t_aenc "$t"
		timeit t "$nhscrypt" decrypt -i key.txt -o n.out n.age; best t_ndec "$t"
		timeit t age -d -i key.txt -o a.out a.age; best t_adec "$t"
	else
		timeit t age -r "$rcpt" -o a.age plain.bin; best t_aenc "$t"
		timeit t "$nhscrypt" encrypt -r "$rcpt" -o n.age plain.bin; best t_nenc "$t"
		timeit t age -d -i key.txt -o a.out a.age; best t_adec "$t"
		timeit t "$nhscrypt" decrypt -i key.txt -o n.out n.age; best t_ndec "$t"
	fi
done
cmp -s n.out plain.bin && cmp -s a.out plain.bin || { echo "round trip mismatch" >&2; exit 1; }
printf '%-9s %10s %10s %8s\n' op "nhscrypt" "age" "ratio"
printf '%-9s %7s MiB/s %5s MiB/s %7sx\n' encrypt "$(rate "$size_mb" "$t_nenc")" "$(rate "$size_mb" "$t_aenc")" "$(ratio "$t_aenc" "$t_nenc")"
printf '%-9s %7s MiB/s %5s MiB/s %7sx\n' decrypt "$(rate "$size_mb" "$t_ndec")" "$(rate "$size_mb" "$t_adec")" "$(ratio "$t_adec" "$t_ndec")"
rm -f plain.bin n.age a.age n.out a.out
echo

[ "$nfiles" -gt 0 ] || exit 0
echo "== 2. a tree of ${nfiles} small files (0-8 KiB)"
"$mktree" tree "$nfiles"
cp -a tree tree-age
timeit t_ntree "$nhscrypt" encrypt --tree tree --out tree-n -r "$rcpt" -q
timeit t_atree find tree-age -type f -exec age -r "$rcpt" -o {}.age {} \;
[ "$(find tree-n -name '*.age' | wc -l)" = "$nfiles" ] && [ "$(find tree-age -name '*.age' | wc -l)" = "$nfiles" ]
printf '%-22s %8.2f s  (%s files/s)\n' "nhscrypt --tree" "$t_ntree" "$(rate "$nfiles" "$t_ntree")"
printf '%-22s %8.2f s  (%s files/s)\n' "find -exec age" "$t_atree" "$(rate "$nfiles" "$t_atree")"
printf 'ratio (age time / nhscrypt time): %sx\n' "$(ratio "$t_atree" "$t_ntree")"
