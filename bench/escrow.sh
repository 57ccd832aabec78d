#!/usr/bin/env bash
# bench/escrow.sh: `nhscrypt escrow` against the shell script an admin would
# write with the vault CLI and cryptsetup, on the same LUKS2 images and the
# same Vault dev server, in one run. Run as root (cryptsetup), with the
# Vault binary of scripts/install-vault.sh.
#
#   a. enrolling a recovery key on each of BENCH_IMAGES images:
#      `nhscrypt escrow luks-enroll` per image (with --no-header-backup, and
#      with the header backup it escrows by default) against, per image:
#        key=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
#        vault kv put -cas=0 secret/nhscrypt/bench/NAME key=- state=pending   (key on stdin)
#        cryptsetup luksAddKey --key-file pass.bin --pbkdf argon2id … IMG -  (key on stdin)
#        cryptsetup open --test-passphrase --key-slot 1 --key-file - IMG      (key on stdin)
#        vault kv patch secret/nhscrypt/bench/NAME state=active
#      The script escrows no header backup. Every round starts from copies
#      of the freshly formatted images (keyslot 0 only).
#   b. verifying the escrowed keys: one `nhscrypt escrow verify --device …`
#      for all images against a loop of `vault kv get -field=key | cryptsetup
#      open --test-passphrase --key-slot 1` per key.
#   c. raw escrow operations on BENCH_SECRETS secrets: `nhscrypt escrow put`
#      per secret against `vault kv put -cas=0` per secret; `nhscrypt escrow
#      get` against `vault kv get -field=key`; `nhscrypt escrow list` against
#      `vault kv list` (names only) and against `vault kv list` followed by
#      `vault kv metadata get` per entry (what nhscrypt's list shows).
#
# Every image is LUKS2 with one argon2id keyslot of 64 MiB (BENCH_KDF_MIB)
# and time cost 4 (cryptsetup's minimum for argon2), so both sides pay the
# same key derivation: nhscrypt copies keyslot 0's costs (they meet the
# policy minimum, 64 MiB and 2), the script passes them to luksAddKey; the
# run checks that both made the same keyslot 1. Times are wall clock, the
# best and the median of BENCH_ROUNDS rounds, the tools taking turns going
# first; ratio = peer time / nhscrypt time, above 1 means nhscrypt is
# faster. CPU is that of the command's processes plus the Vault server's,
# and the run warns when the rest of the machine was busy meanwhile. It
# also times `cryptsetup open --test-passphrase` alone (one key derivation)
# and one nhscrypt key test, to say how much of each side is the KDF, and
# prints nhscrypt's peak RSS and CPU split for verify (GNU time, if
# installed).
#
# Knobs: BENCH_DIR (default /var/tmp), BENCH_IMAGES (10), BENCH_SECRETS
# (100), BENCH_ROUNDS (3), BENCH_KDF_MIB (64: the argon2id memory of the
# keyslots; cryptsetup's own default is up to 1024), NHSCRYPT (default:
# bin/nhscrypt, built from this tree), NHSCRYPT_VAULT_BIN (default: what
# scripts/install-vault.sh prints).
set -euo pipefail
cd "$(dirname "$0")/.."
n=${BENCH_IMAGES:-10}
nsec=${BENCH_SECRETS:-100}
rounds=${BENCH_ROUNDS:-3}
kdf_mib=${BENCH_KDF_MIB:-64}
nhscrypt=${NHSCRYPT:-bin/nhscrypt}
[ -n "${NHSCRYPT:-}" ] || go build -o "$nhscrypt" ./cmd/nhscrypt
nhscrypt=$(realpath "$nhscrypt")
vaultbin=${NHSCRYPT_VAULT_BIN:-$(bash scripts/install-vault.sh)}
export PATH=$PATH:/usr/sbin:/sbin
for tool in cryptsetup od curl awk; do
	command -v $tool >/dev/null || { echo "$tool is not installed" >&2; exit 1; }
done
gnutime=/usr/bin/time
[ -x "$gnutime" ] || gnutime=

work=$(mktemp -d "${BENCH_DIR:-/var/tmp}/nhscrypt-bench-escrow.XXXXXX")
vault_pid=
stop_vault() {
	[ -n "$vault_pid" ] || return 0
	kill "$vault_pid" 2>/dev/null || true
	for _ in $(seq 1 100); do kill -0 "$vault_pid" 2>/dev/null || break; sleep 0.1; done
	kill -9 "$vault_pid" 2>/dev/null || true
	wait "$vault_pid" 2>/dev/null || true
	vault_pid=
}
trap 'stop_vault; rm -rf "$work"' EXIT
cd "$work"

# A Vault dev server of our own on a free port, as keystore/vault/vaulttest
# starts it (KV version 2 is mounted at secret/ in dev mode).
mkdir vault-home
root_token=bench-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
for attempt in 1 2 3; do
	port=$((20000 + RANDOM % 20000))
	HOME=$work/vault-home "$vaultbin" server -dev -dev-root-token-id="$root_token" \
		-dev-listen-address=127.0.0.1:$port -dev-no-store-token -log-level=warn > vault.log 2>&1 &
	vault_pid=$!
	up=0
	for _ in $(seq 1 600); do
		if curl -fs "http://127.0.0.1:$port/v1/sys/health" >/dev/null 2>&1; then up=1; break; fi
		kill -0 "$vault_pid" 2>/dev/null || break
		sleep 0.1
	done
	[ "$up" = 1 ] && break
	stop_vault
done
[ "$up" = 1 ] || { echo "vault dev server did not start:" >&2; cat vault.log >&2; exit 1; }
export VAULT_ADDR=http://127.0.0.1:$port VAULT_TOKEN=$root_token
vault() { "$vaultbin" "$@"; }

kdf=(--pbkdf argon2id --pbkdf-memory $((kdf_mib * 1024)) --pbkdf-force-iterations 4)
head -c 32 /dev/urandom > pass.bin
mkdir orig nh nhh sh one state secrets
for i in $(seq 1 "$n"); do
	truncate -s 20M orig/disk$i.img
	cryptsetup luksFormat -q --type luks2 "${kdf[@]}" --key-file pass.bin orig/disk$i.img
done
for j in $(seq 1 "$nsec"); do
	head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > secrets/s$j
done
# reset SET: the images of SET as freshly formatted (keyslot 0 only).
reset() { for i in $(seq 1 "$n"); do cp --sparse=always orig/disk$i.img "$1/disk$i.img"; done; }
devs() { for i in $(seq 1 "$n"); do printf -- '--device\0%s\0' "$work/$1/disk$i.img"; done; }

now() { date +%s.%N; }
# busy: CPU seconds the whole machine has spent so far (not idle, not iowait).
busy() { awk '/^cpu /{printf "%.2f\n", ($2+$3+$4+$7+$8+$9)/100}' /proc/stat; }
# own: CPU seconds of this shell's finished children plus the Vault server,
# written to own.out (`times` must run in this shell, not a subshell).
own() {
	times > times.out
	awk 'NR == 2 { split($1, a, /[ms]/); split($2, b, /[ms]/); c = a[1] * 60 + a[2] + b[1] * 60 + b[2] }
		FILENAME ~ /stat$/ { v = ($14 + $15) / 100 } END { printf "%.3f\n", c + v }' times.out "/proc/$vault_pid/stat" > own.out
}
# timeit PHASE TOOL CMD…: run CMD; append "PHASE TOOL wall cpu other" to
# results: wall seconds, CPU seconds of CMD and of the Vault server, and CPU
# seconds the rest of the machine used meanwhile.
timeit() {
	local phase=$1 tool=$2 t0 t1 b0 b1 c0 c1; shift 2
	own; c0=$(<own.out); b0=$(busy); t0=$(now)
	"$@"
	t1=$(now); b1=$(busy); own; c1=$(<own.out)
	awk -v p="$phase" -v t="$tool" -v a="$t0" -v b="$t1" -v b0="$b0" -v b1="$b1" -v c0="$c0" -v c1="$c1" \
		'BEGIN { c = c1 - c0; o = b1 - b0 - c; if (o < 0) o = 0; printf "%s %s %.4f %.2f %.2f\n", p, t, b - a, c, o }' >> results
}
# pick PHASE TOOL best|median [FIELD]: over the rounds (field 3 wall, the
# default; 4 CPU; 5 other CPU).
pick() {
	awk -v p="$1" -v t="$2" -v f="${4:-3}" '$1 == p && $2 == t { print $f }' results | sort -g |
		awk -v w="$3" '{ v[NR] = $1 } END { if (NR == 0) { print "-"; exit }
			if (w == "best") m = v[1]; else if (NR % 2) m = v[(NR + 1) / 2]; else m = (v[NR / 2] + v[NR / 2 + 1]) / 2
			printf "%.3f\n", m }'
}
rotate() { local k=$1; shift; local a=("$@"); k=$((k % ${#a[@]})); echo "${a[@]:k}" "${a[@]:0:k}"; }
calc() { awk "BEGIN { printf \"$1\n\", $2 }"; }

# a. Enrolment.
nh_enroll() { # SET [flags]
	local set=$1; shift
	for i in $(seq 1 "$n"); do
		"$nhscrypt" escrow luks-enroll -q --device "$work/$set/disk$i.img" --key-file pass.bin --name disk$i \
			--state-dir "$work/state" --vault-prefix "nhscrypt/bench-r$r-$set" "$@"
	done
}
sh_enroll() {
	local key
	for i in $(seq 1 "$n"); do
		key=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
		printf %s "$key" | vault kv put -cas=0 "secret/nhscrypt/bench/r$r-disk$i" key=- state=pending >/dev/null
		printf %s "$key" | cryptsetup luksAddKey --key-file pass.bin "${kdf[@]}" "sh/disk$i.img" -
		printf %s "$key" | cryptsetup open --test-passphrase --key-slot 1 --key-file - "sh/disk$i.img"
		vault kv patch "secret/nhscrypt/bench/r$r-disk$i" state=active >/dev/null
	done
}
# b. Verification of the last round's keys.
nh_verify() {
	local rc=0
	"$nhscrypt" escrow verify --vault-prefix "nhscrypt/bench-r$rounds-nhh" "${nhh_devs[@]}" > verify.out 2>&1 || rc=$?
	[ "$rc" = 0 ] || { echo "nhscrypt escrow verify exited $rc:" >&2; cat verify.out >&2; exit 1; }
}
# The cost of one key test in a fresh nhscrypt process: verify a store that
# holds one key, less listing that store (both $n times).
nh_verify_one() {
	for i in $(seq 1 "$n"); do
		"$nhscrypt" escrow verify --vault-prefix nhscrypt/bench-one --device "$work/one/disk1.img" >/dev/null
	done
}
nh_list_one() { for i in $(seq 1 "$n"); do "$nhscrypt" escrow list --vault-prefix nhscrypt/bench-one >/dev/null; done; }
sh_verify() {
	for i in $(seq 1 "$n"); do
		vault kv get -field=key "secret/nhscrypt/bench/r$rounds-disk$i" |
			cryptsetup open --test-passphrase --key-slot 1 --key-file - "sh/disk$i.img"
	done
}
# The KDF alone: one key derivation in cryptsetup, and cryptsetup without one.
cs_open() { for i in $(seq 1 "$n"); do cryptsetup open --test-passphrase --key-slot 0 --key-file pass.bin orig/disk$i.img; done; }
cs_isluks() { for i in $(seq 1 "$n"); do cryptsetup isLuks orig/disk$i.img; done; }
# c. Raw operations.
nh_put() { for j in $(seq 1 "$nsec"); do "$nhscrypt" escrow put -q --kind luks-recovery --name s$j --vault-prefix "nhscrypt/bench-put-r$r" secrets/s$j; done; }
kv_put() { for j in $(seq 1 "$nsec"); do vault kv put -cas=0 "secret/nhscrypt/bench-kv-r$r/s$j" key=@secrets/s$j >/dev/null; done; }
nh_get() {
	for j in $(seq 1 "$nsec"); do "$nhscrypt" escrow get -q s$j -o got/n$j --vault-prefix "nhscrypt/bench-put-r$r"; done
}
kv_get() { for j in $(seq 1 "$nsec"); do vault kv get -field=key "secret/nhscrypt/bench-kv-r$r/s$j" > got/v$j; done; }
nh_list() { [ "$("$nhscrypt" escrow list --vault-prefix "nhscrypt/bench-put-r$r" | wc -l)" = $((nsec + 1)) ]; }
kv_list() { [ "$(vault kv list "secret/nhscrypt/bench-kv-r$r" | wc -l)" = $((nsec + 2)) ]; }
kv_list_md() {
	vault kv list -format=json "secret/nhscrypt/bench-kv-r$r" | tr -d '[]", ' | grep . |
		while read -r name; do vault kv metadata get "secret/nhscrypt/bench-kv-r$r/$name" >/dev/null; done
}

echo "nhscrypt:   $("$nhscrypt" version | head -n 1)"
echo "vault:      $(vault version)"
echo "cryptsetup: $(cryptsetup --version)"
echo "machine:    $(nproc) cores, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r), bench dir $work"
echo "$n LUKS2 images (20 MiB, argon2id $kdf_mib MiB, time 4), $nsec secrets, $rounds rounds"
echo

for r in $(seq 1 "$rounds"); do
	for t in $(rotate $((r - 1)) nh nhh sh); do
		reset "$t"
		case $t in
		nh) timeit enroll nh nh_enroll nh --no-header-backup ;;
		nhh) timeit enroll nhh nh_enroll nhh ;;
		sh) timeit enroll sh sh_enroll ;;
		esac
	done
	echo "enrolment round $r: done"
done
# Both sides made the same keyslot 1.
ks1() { cryptsetup luksDump "$1" | sed -n '/^  1: luks2/,/Digest ID/p' | grep -E 'PBKDF|Time cost|Memory|Threads' | tr -s ' \t' ' '; }
if [ "$(ks1 nh/disk1.img)" != "$(ks1 sh/disk1.img)" ]; then
	echo "warning: nhscrypt's and the script's keyslot 1 differ:" >&2
	ks1 nh/disk1.img >&2; echo --- >&2; ks1 sh/disk1.img >&2
fi
kdf_line=$(ks1 nhh/disk1.img | tr '\n' ' ')

mapfile -d '' nhh_devs < <(devs nhh)
cp --sparse=always orig/disk1.img one/disk1.img
"$nhscrypt" escrow luks-enroll -q --device "$work/one/disk1.img" --key-file pass.bin --name disk1 \
	--state-dir "$work/state" --vault-prefix nhscrypt/bench-one
for r in $(seq 1 "$rounds"); do
	if [ $((r % 2)) = 1 ]; then
		timeit verify nh nh_verify; timeit verify sh sh_verify
	else
		timeit verify sh sh_verify; timeit verify nh nh_verify
	fi
	timeit verify-one nh nh_verify_one
	timeit list-one nh nh_list_one
	timeit kdf open cs_open
	timeit kdf isluks cs_isluks
done
echo "verification: done"
if [ -n "$gnutime" ]; then
	"$gnutime" -f '%e %U %S %M' -o time.out "$nhscrypt" escrow verify --vault-prefix "nhscrypt/bench-r$rounds-nhh" "${nhh_devs[@]}" >/dev/null
	read -r v_e v_u v_s v_m < time.out
	"$gnutime" -f '%e %U %S %M' -o time.out bash -c 'for i in $(seq 1 '"$n"'); do
		"'"$vaultbin"'" kv get -field=key secret/nhscrypt/bench/r'"$rounds"'-disk$i |
			cryptsetup open --test-passphrase --key-slot 1 --key-file - sh/disk$i.img || exit 1; done'
	read -r s_e s_u s_s s_m < time.out
fi

mkdir got
for r in $(seq 1 "$rounds"); do
	for t in $(rotate $((r - 1)) nh kv); do
		timeit put "$t" ${t}_put
	done
	rm -f got/*
	for t in $(rotate $((r - 1)) nh kv); do
		timeit get "$t" ${t}_get
	done
	for j in $(seq 1 "$nsec"); do
		cmp -s secrets/s$j got/n$j && cmp -s secrets/s$j got/v$j || { echo "secret s$j did not round-trip" >&2; exit 1; }
	done
	for t in $(rotate $((r - 1)) nh kv kvmd); do
		case $t in
		nh) timeit list nh nh_list ;;
		kv) timeit list kv kv_list ;;
		kvmd) timeit list kvmd kv_list_md ;;
		esac
	done
	echo "raw operations round $r: done"
done
echo

# Table: wall seconds, best and median; CPU seconds (median, the tool's
# processes and the Vault server's); ratio of the best wall times.
row() { # LABEL PHASE NH PEER
	local nb nm pb pm
	nb=$(pick "$2" "$3" best) nm=$(pick "$2" "$3" median) pb=$(pick "$2" "$4" best) pm=$(pick "$2" "$4" median)
	printf '%-44s %8s %8s %7s %8s %8s %7s %7sx\n' "$1" "$nb" "$nm" "$(pick "$2" "$3" median 4)" \
		"$pb" "$pm" "$(pick "$2" "$4" median 4)" "$(calc %.2f "$pb / $nb")"
}
echo "== summary (seconds: wall best and median of $rounds rounds, CPU median incl. the Vault server's;"
echo "   ratio = peer best / nhscrypt best, above 1: nhscrypt faster)"
printf '%-44s %8s %8s %7s %8s %8s %7s %8s\n' operation "nh best" "nh med" "nh CPU" "peer bst" "peer med" "pr CPU" ratio
row "a. enrol $n images, --no-header-backup" enroll nh sh
row "a. enrol $n images, with header backup (*)" enroll nhh sh
row "b. verify $n keys (1 process vs loop)" verify nh sh
row "c. put $nsec secrets (vault kv put -cas=0)" put nh kv
row "c. get $nsec secrets (vault kv get -field)" get nh kv
row "c. list $nsec entries (vault kv list)" list nh kv
row "c. list $nsec entries (kv list + metadata get)" list nh kvmd
echo "(*) the script escrows no header backup; nhscrypt's also reads, compresses and escrows a ~260 KiB header"
echo "keyslot 1 made by both: $kdf_line"
awk '$5 > 0.3 && $5 > $3 / 4 { k++ } END { if (k) printf "warning: other processes used over a quarter of a core during %d of %d measurements: those times are inflated; rerun on a quiet machine\n", k, NR }' results
echo

# Where the time goes.
t_open=$(pick kdf open median) t_isluks=$(pick kdf isluks median)
kdf_cs=$(calc %.4f "($t_open - $t_isluks) / $n")
t_sh_enroll=$(pick enroll sh median) t_nh_enroll=$(pick enroll nh median)
t_sh_verify=$(pick verify sh median) t_nh_verify=$(pick verify nh median)
kdf_cold=$(calc %.4f "($(pick verify-one nh median) - $(pick list-one nh median)) / $n")
kdf_warm=$kdf_cold
[ "$n" -lt 2 ] || kdf_warm=$(calc %.4f "($t_nh_verify - $kdf_cold - $(pick list-one nh median) / $n) / ($n - 1)")
echo "== where the time goes (medians)"
printf '%-70s %7.3f s\n' "cryptsetup open --test-passphrase, one keyslot (per call)" "$(calc %.4f "$t_open / $n")"
printf '%-70s %7.3f s\n' "cryptsetup isLuks, no KDF (per call)" "$(calc %.4f "$t_isluks / $n")"
printf '%-70s %7.3f s\n' "=> one argon2id derivation in cryptsetup" "$kdf_cs"
printf '%-70s %7.3f s\n' "nhscrypt: first key test in a process (verify 1 key - list 1 key)" "$kdf_cold"
printf '%-70s %7.3f s\n' "nhscrypt: each further key test in the same process (verify $n keys)" "$kdf_warm"
printf '%-70s %7.3f s\n' "vault CLI, one kv put (put loop / $nsec)" "$(calc %.4f "$(pick put kv median) / $nsec")"
printf '%-70s %7.3f s\n' "nhscrypt, one escrow put (put loop / $nsec)" "$(calc %.4f "$(pick put nh median) / $nsec")"
echo "script enrolment, per image: 3 cryptsetup KDFs (luksAddKey unlocks keyslot 0 and derives keyslot 1;" \
	"open tests it): ~$(calc %.0f "100 * 3 * $n * $kdf_cs / $t_sh_enroll")% of its time"
echo "nhscrypt enrolment, per image: the same 2 in luksAddKey + 2 in-process key tests in a fresh process" \
	"(the existing key, then the proof): ~$(calc %.0f "100 * $n * (2 * $kdf_cs + 2 * $kdf_cold) / $t_nh_enroll")% of its time"
echo "script verify: ~$(calc %.0f "100 * $n * $kdf_cs / $t_sh_verify")% KDF;" \
	"nhscrypt verify: ~$(calc %.0f "100 * ($kdf_cold + ($n - 1) * $kdf_warm) / $t_nh_verify")% in-process key tests"
if [ -n "$gnutime" ]; then
	printf 'nhscrypt escrow verify (%s keys): %s s wall, %s s user, %s s sys, peak RSS %s MiB\n' "$n" "$v_e" "$v_u" "$v_s" "$(calc %.0f "$v_m / 1024")"
	printf 'script verify loop (%s keys):     %s s wall, %s s user, %s s sys, peak RSS %s MiB (largest process)\n' "$n" "$s_e" "$s_u" "$s_s" "$(calc %.0f "$s_m / 1024")"
else
	echo "GNU time (/usr/bin/time) is not installed: no peak RSS"
fi
