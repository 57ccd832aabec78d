#!/usr/bin/env bash
# bench/backup.sh: nhscrypt backup against restic and a
# `tar | zstd -3 -T0 | age` pipeline on the same tree, in one run.
#
# A mixed tree (bench/mktree -mode mixed: ~1 GiB, ~20,000 files, half the
# bytes compressible text, half random binary, mostly small files) is backed
# up by each tool: a first backup, a second with nothing changed, and a third
# after 1% of the files were edited (mktree -mode change). The pipeline uses
# GNU tar's --listed-incremental for the second and third, the standard-tools
# way to back up only what changed. Then the latest backup is restored in
# full, several times: `nhscrypt backup restore latest -i KEY`, `restic
# restore latest --target`, and `age -d | zstd -d | tar x` over the
# pipeline's three archives in order.
#
# Every command is timed by GNU time (wall, user+sys CPU, peak RSS of the
# largest process) up to a `sync`, so that every tool pays for putting its
# output on disk (nhscrypt and restic fsync, the pipeline does not). The page
# cache is warm for all three. Tools take turns going first. Each figure is
# the median over the rounds; "other CPU" is the CPU time the rest of the
# machine used during the command (from /proc/stat): when it is large, the
# figure was taken on a busy machine.
#
# Targets (nhscrypt / restic wall time): first backup ≤ 0.5×, no-change
# ≤ 1.0×, 1%-changed ≤ 1.0×, restore ≤ 1.0×; nhscrypt's peak RSS ≤ 256 MiB,
# and flat when the tree grows: with BENCH_FLAT=1, nhscrypt's first backup of
# a BENCH_BIG_GIB tree must peak at ≤ 1.25× the RSS of the first tree's, and
# ≤ 256 MiB. That tree has BENCH_BIG_FILES files, by default BENCH_FILES
# scaled to its size (the same kind of tree, bigger); set BENCH_BIG_FILES to
# BENCH_FILES to grow the bytes only.
#
# Knobs: BENCH_DIR (default /var/tmp), BENCH_MIB (1024), BENCH_FILES (20000),
# BENCH_ROUNDS (3: rounds of the three backups, each on fresh repositories),
# BENCH_RESTORE_ROUNDS (3), BENCH_FLAT (0; 1 also backs up a BENCH_BIG_GIB
# tree with nhscrypt and compares its peak RSS), BENCH_BIG_GIB (5),
# BENCH_BIG_FILES (BENCH_FILES scaled to the size), NHSCRYPT (default:
# bin/nhscrypt, built from this tree).
set -euo pipefail
cd "$(dirname "$0")/.."
mib=${BENCH_MIB:-1024}
nfiles=${BENCH_FILES:-20000}
rounds=${BENCH_ROUNDS:-3}
rrounds=${BENCH_RESTORE_ROUNDS:-3}
flat=${BENCH_FLAT:-0}
big_gib=${BENCH_BIG_GIB:-5}
big_files=${BENCH_BIG_FILES:-$((nfiles * big_gib * 1024 / mib))}
nhscrypt=${NHSCRYPT:-bin/nhscrypt}
[ -n "${NHSCRYPT:-}" ] || go build -o "$nhscrypt" ./cmd/nhscrypt
nhscrypt=$(realpath "$nhscrypt")
mktree=$(mktemp /tmp/nhscrypt-mktree.XXXXXX)
go build -o "$mktree" ./bench/mktree

# Tools, installed from Debian if missing (as root).
missing=()
for tp in restic:restic zstd:zstd age:age tar:tar /usr/bin/time:time; do
	command -v "${tp%%:*}" >/dev/null || missing+=("${tp##*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
		echo "installing ${missing[*]}"
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
	else
		echo "missing: ${missing[*]} (make bench-deps installs them)" >&2
		exit 1
	fi
fi

work=$(mktemp -d "${BENCH_DIR:-/var/tmp}/nhscrypt-bench-backup.XXXXXX")
trap 'rm -rf "$work" "$mktree"' EXIT
cd "$work"
export RESTIC_PASSWORD=nhscrypt-bench RESTIC_CACHE_DIR=$work/restic-cache
"$nhscrypt" keygen -o key.txt 2>/dev/null
rcpt=$("$nhscrypt" keygen -y key.txt)
src=$work/src

# busy: CPU seconds the whole machine has spent so far (not idle, not iowait).
busy() { awk '/^cpu /{printf "%.2f\n", ($2+$3+$4+$7+$8+$9)/100}' /proc/stat; }
# measure PHASE TOOL CMD: run the shell command CMD and then sync under GNU
# time; append "PHASE TOOL wall cpu rss_kib other_cpu" to results.
measure() {
	local phase=$1 tool=$2 cmd=$3 b0 b1 e u s m
	sync
	b0=$(busy)
	if ! /usr/bin/time -f '%e %U %S %M' -o time.out bash -c "$cmd && sync"; then
		echo "$phase $tool failed: $cmd" >&2
		cat time.out >&2
		exit 1
	fi
	b1=$(busy)
	read -r e u s m < <(tail -n 1 time.out)
	awk -v p="$phase" -v t="$tool" -v e="$e" -v u="$u" -v s="$s" -v m="$m" -v b0="$b0" -v b1="$b1" \
		'BEGIN { o = b1 - b0 - u - s; if (o < 0) o = 0; printf "%s %s %s %.2f %d %.2f\n", p, t, e, u + s, m, o }' >> results
}
# median PHASE TOOL FIELD: median of a results column (3 wall, 4 cpu,
# 5 rss KiB, 6 other).
median() {
	awk -v p="$1" -v t="$2" -v f="$3" '$1 == p && $2 == t { print $f }' results | sort -g |
		awk '{ v[NR] = $1 } END { if (NR == 0) { print "-"; exit } if (NR % 2) m = v[(NR + 1) / 2]; else m = (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%.2f\n", m }'
}
# rotate N WORDS…: the words rotated left by N.
rotate() { local n=$1; shift; local a=("$@"); n=$((n % ${#a[@]})); echo "${a[@]:n}" "${a[@]:0:n}"; }

nh_flags=(--repo "$work/n-repo" --state-dir "$work/n-state" --signing-key "$work/n-state/signing.key")
nh_q=$(printf '%q ' "${nh_flags[@]}")

init_repos() {
	rm -rf n-repo n-state r-repo p-repo restic-cache
	"$nhscrypt" backup init -q "${nh_flags[@]}" -r "$rcpt" >/dev/null
	restic init -q --repo r-repo >/dev/null
	mkdir p-repo
}
# backup TOOL LEVEL: the command that backs up src with TOOL; LEVEL numbers
# the pipeline's archives (0 full, then incremental).
backup_cmd() {
	case $1 in
	nhscrypt) echo "$nhscrypt backup run -q $nh_q $src" ;;
	restic) echo "restic -q --repo r-repo backup $src" ;;
	pipeline) echo "tar --listed-incremental=p-repo/snar -C $work -cf - src | zstd -3 -T0 -q | age -r $rcpt > p-repo/$2.tar.zst.age" ;;
	esac
}
restore_cmd() {
	case $1 in
	nhscrypt) echo "$nhscrypt backup restore -q $nh_q latest --target t-nhscrypt -i key.txt" ;;
	restic) echo "restic -q --repo r-repo restore latest --target t-restic" ;;
	pipeline) echo "mkdir t-pipeline && for a in p-repo/[0-9].tar.zst.age; do age -d -i key.txt \$a | zstd -d -q | tar --listed-incremental=/dev/null -xf - -C t-pipeline || exit 1; done" ;;
	esac
}
restored_root() {
	case $1 in
	nhscrypt) echo "t-nhscrypt$src" ;;
	restic) echo "t-restic$src" ;;
	pipeline) echo "t-pipeline/src" ;;
	esac
}

echo "nhscrypt: $("$nhscrypt" version | head -n 1)"
echo "restic:   $(restic version)"
echo "zstd:     $(zstd --version)"
echo "age:      $(age --version)"
echo "machine:  $(nproc) cores, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r), bench dir $work"
echo

"$mktree" -mode mixed -mib "$mib" -files "$nfiles" "$src"
sync
echo "tree: $(find src -type f | wc -l) files, $(find src -type d | wc -l) folders, $(du -sb src | awk '{printf "%.0f MiB", $1/1048576}');" \
	"$((rounds)) round(s) of backups, $rrounds of restores"

tools=(nhscrypt restic pipeline)
for r in $(seq 1 "$rounds"); do
	init_repos
	order=$(rotate $((r - 1)) "${tools[@]}")
	for t in $order; do measure first "$t" "$(backup_cmd "$t" 0)"; done
	for t in $order; do measure nochange "$t" "$(backup_cmd "$t" 1)"; done
	changed=$("$mktree" -mode change -pct 1 -seed $((r + 1)) "$src")
	for t in $order; do measure changed "$t" "$(backup_cmd "$t" 2)"; done
	echo "round $r: done ($changed files changed before the third backup)"
done
repo_sizes="nhscrypt $(du -sm n-repo | cut -f1) MiB, restic $(du -sm r-repo | cut -f1) MiB, pipeline $(du -sm p-repo | cut -f1) MiB"

for r in $(seq 1 "$rrounds"); do
	order=$(rotate $((r - 1)) "${tools[@]}")
	for t in $order; do
		rm -rf "t-$t"
		measure restore "$t" "$(restore_cmd "$t")"
		if [ "$r" = 1 ]; then
			diff -r --no-dereference "$src" "$(restored_root "$t")" >/dev/null ||
				{ echo "$t restored a tree that differs from the source" >&2; exit 1; }
		fi
	done
	echo "restore round $r: done"
done
rm -rf t-nhscrypt t-restic t-pipeline
echo

tomib() { awk -v k="$1" 'BEGIN { printf "%.0f", k / 1024 }'; }
printf '%-18s %-9s %9s %9s %14s %11s\n' phase tool "wall s" "CPU s" "peak RSS MiB" "other CPU s"
for phase in first nochange changed restore; do
	case $phase in
	first) label="first backup" ;; nochange) label="no change" ;; changed) label="1% changed" ;; restore) label="full restore" ;;
	esac
	for t in "${tools[@]}"; do
		printf '%-18s %-9s %9s %9s %14s %11s\n' "$label" "$t" "$(median $phase "$t" 3)" "$(median $phase "$t" 4)" \
			"$(tomib "$(median $phase "$t" 5)")" "$(median $phase "$t" 6)"
		label=""
	done
done
echo "medians of $rounds backup round(s) and $rrounds restore round(s); repositories after the last round: $repo_sizes"
busy_note() {
	awk '$6 > 0.5 && $6 > $4 / 2 { n++ } END { if (n) printf "warning: the rest of the machine used over half as much CPU as the tool in %d of %d measurements (other CPU column): those wall times are inflated; rerun on a quiet machine\n", n, NR }' results
}
busy_note
echo

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
met() { awk -v v="$1" -v t="$2" 'BEGIN { print (v <= t ? "yes" : "NO") }'; }
printf '%-24s %10s %10s %17s %8s %5s\n' target nhscrypt restic "nhscrypt/restic" limit met
for pt in first:0.5 nochange:1.0 changed:1.0 restore:1.0; do
	phase=${pt%%:*} limit=${pt##*:}
	n=$(median "$phase" nhscrypt 3) rs=$(median "$phase" restic 3)
	x=$(ratio "$n" "$rs")
	case $phase in
	first) label="first backup, wall" ;; nochange) label="no-change backup, wall" ;; changed) label="1%-changed backup, wall" ;; restore) label="full restore, wall" ;;
	esac
	printf '%-24s %8ss %8ss %16sx %7sx %5s\n' "$label" "$n" "$rs" "$x" "$limit" "$(met "$x" "$limit")"
done
peak=$(awk '$2 == "nhscrypt" && $5 > m { m = $5 } END { print m }' results)
printf '%-24s %7s MiB %10s %17s %4s MiB %5s\n' "nhscrypt peak RSS (max)" "$(tomib "$peak")" "" "" 256 "$(met "$(tomib "$peak")" 256)"

[ "$flat" = 1 ] || exit 0
echo
echo "== memory flatness: nhscrypt's first backup of a ${big_gib} GiB tree (${big_files} files)"
rm -rf src n-repo n-state r-repo p-repo restic-cache
"$mktree" -mode mixed -mib $((big_gib * 1024)) -files "$big_files" "$src"
sync
"$nhscrypt" backup init -q "${nh_flags[@]}" -r "$rcpt" >/dev/null
measure bigfirst nhscrypt "$(backup_cmd nhscrypt 0)"
small=$(median first nhscrypt 5) big=$(median bigfirst nhscrypt 5)
printf '%-24s %9s %9s %14s %11s\n' tree "wall s" "CPU s" "peak RSS MiB" "other CPU s"
printf '%-24s %9s %9s %14s %11s\n' "${mib} MiB, ${nfiles} files" "$(median first nhscrypt 3)" "$(median first nhscrypt 4)" "$(tomib "$small")" "$(median first nhscrypt 6)"
printf '%-24s %9s %9s %14s %11s\n' "${big_gib} GiB, ${big_files} files" "$(median bigfirst nhscrypt 3)" "$(median bigfirst nhscrypt 4)" "$(tomib "$big")" "$(median bigfirst nhscrypt 6)"
g=$(ratio "$big" "$small")
echo "peak RSS ${big_gib} GiB / ${mib} MiB: ${g}x; flat (≤ 1.25x and ≤ 256 MiB): $(awk -v g="$g" -v b="$(tomib "$big")" 'BEGIN { print (g <= 1.25 && b <= 256 ? "yes" : "NO") }')"
