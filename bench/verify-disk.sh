#!/usr/bin/env bash
# bench/verify-disk.sh: `nhscrypt verify-disk` over 20 LUKS images against a
# loop of `cryptsetup luksDump` over the same images, in one run.
# Target: nhscrypt at least as fast as the luksDump loop, and under 0.3 s for
# the whole set (no key tests).
# Knobs: BENCH_DIR (default /var/tmp), BENCH_IMAGES (20), BENCH_ROUNDS (5),
# NHSCRYPT (default: bin/nhscrypt, built from this tree).
set -euo pipefail
cd "$(dirname "$0")/.."
n=${BENCH_IMAGES:-20}
rounds=${BENCH_ROUNDS:-5}
nhscrypt=${NHSCRYPT:-bin/nhscrypt}
[ -n "${NHSCRYPT:-}" ] || go build -o "$nhscrypt" ./cmd/nhscrypt
nhscrypt=$(realpath "$nhscrypt")
export PATH=$PATH:/usr/sbin:/sbin
for tool in cryptsetup bc; do
	command -v $tool >/dev/null || { echo "$tool is not installed (make bench installs it)" >&2; exit 1; }
done
work=$(mktemp -d "${BENCH_DIR:-/var/tmp}/nhscrypt-bench-disk.XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work"
printf 'bench passphrase' > key

# A mix like a fleet's: LUKS2 argon2id and pbkdf2, LUKS1, several keyslots.
devs=()
for i in $(seq 1 "$n"); do
	img=disk$i.img
	case $((i % 4)) in
	0) truncate -s 8M "$img"; cryptsetup luksFormat -q --type luks1 --pbkdf-force-iterations 1000 --key-file key "$img" ;;
	1) truncate -s 20M "$img"; cryptsetup luksFormat -q --type luks2 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --key-file key "$img" ;;
	*) truncate -s 20M "$img"; cryptsetup luksFormat -q --type luks2 --pbkdf argon2id --pbkdf-memory 32 --pbkdf-force-iterations 4 --key-file key "$img" ;;
	esac
	devs+=(--device "$img")
done

now() { date +%s.%N; }
best() { if [ -z "${!1:-}" ] || [ "$(echo "$2 < ${!1}" | bc -l)" = 1 ]; then printf -v "$1" '%s' "$2"; fi; }
t_n='' t_c=''
for r in $(seq 1 "$rounds"); do
	t0=$(now)
	rc=0; "$nhscrypt" verify-disk "${devs[@]}" >/dev/null || rc=$?
	case $rc in 0|3|4) ;; *) echo "nhscrypt verify-disk failed with exit $rc" >&2; exit 1 ;; esac
	best t_n "$(echo "$(now) - $t0" | bc -l)"
	t0=$(now)
	for i in $(seq 1 "$n"); do cryptsetup luksDump "disk$i.img" >/dev/null; done
	best t_c "$(echo "$(now) - $t0" | bc -l)"
done
echo "nhscrypt: $("$nhscrypt" version)"
echo "cryptsetup: $(cryptsetup --version)"
echo "$n images, best of $rounds rounds"
printf '%-40s %8.4f s\n' "nhscrypt verify-disk (all $n)" "$t_n"
printf '%-40s %8.4f s\n' "for each: cryptsetup luksDump" "$t_c"
printf 'ratio (luksDump loop time / nhscrypt time): %sx\n' "$(echo "scale=1; $t_c / $t_n" | bc -l)"
ok=$(echo "$t_n < 0.3" | bc -l)
echo "under 0.3 s: $([ "$ok" = 1 ] && echo yes || echo NO)"
