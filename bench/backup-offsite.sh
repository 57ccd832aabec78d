#!/usr/bin/env bash
# bench/backup-offsite.sh: the first backup of the same ~1 GiB mixed tree to
# SFTP and to S3 on localhost, nhscrypt against restic (which speaks both),
# in one run: wall time, peak RSS and bytes stored on the server.
#
# It starts its own sshd (a throw-away config, host key and client key) and
# versitygw (the S3-compatible server of the tests, built by `make
# test-tools`) on 127.0.0.1 high ports, and stops them at the end.
# Targets: nhscrypt ≤ 0.7× restic's wall time, peak RSS ≤ 256 MiB.
# Knobs: BENCH_DIR (default /var/tmp), BENCH_MIB (1024), BENCH_FILES
# (20000), BENCH_ROUNDS (2, best of), NHSCRYPT (default: bin/nhscrypt, built
# from this tree).
set -euo pipefail
cd "$(dirname "$0")/.."
mib=${BENCH_MIB:-1024}
nfiles=${BENCH_FILES:-20000}
rounds=${BENCH_ROUNDS:-2}
nhscrypt=${NHSCRYPT:-bin/nhscrypt}
[ -n "${NHSCRYPT:-}" ] || go build -o "$nhscrypt" ./cmd/nhscrypt
nhscrypt=$(realpath "$nhscrypt")
export PATH=$PATH:/usr/sbin:$(go env GOPATH)/bin
for tool in restic sshd ssh ssh-keygen versitygw /usr/bin/time bc; do
	command -v "$tool" >/dev/null || { echo "$tool missing (make bench-deps test-tools installs it)" >&2; exit 1; }
done
work=$(mktemp -d "${BENCH_DIR:-/var/tmp}/nhscrypt-bench-offsite.XXXXXX")
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
cd "$work"
mktree=$work/mktree
(cd - >/dev/null && go build -o "$mktree" ./bench/mktree)
"$mktree" -mode mixed -mib "$mib" -files "$nfiles" src >/dev/null

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null ||
	shuf -i 20000-60000 -n 1; }

# sshd, as the tests run it.
mkdir -p ssh /run/sshd
ssh-keygen -q -t ed25519 -N '' -f ssh/host_key
ssh-keygen -q -t ed25519 -N '' -f ssh/client_key
cp ssh/client_key.pub ssh/authorized_keys
sport=$(port)
cat > ssh/sshd_config <<CFG
ListenAddress 127.0.0.1:$sport
HostKey $work/ssh/host_key
AuthorizedKeysFile $work/ssh/authorized_keys
PidFile $work/ssh/sshd.pid
UsePAM no
StrictModes no
PasswordAuthentication no
Subsystem sftp internal-sftp
CFG
"$(command -v sshd)" -D -e -f ssh/sshd_config 2>ssh/log &
pids+=($!)
printf '[127.0.0.1]:%s %s\n' "$sport" "$(cut -d' ' -f1,2 ssh/host_key.pub)" > ssh/known_hosts
user=$(id -un)

# versitygw.
mkdir -p s3data s3versions s3data/bench
s3port=$(port)
export AWS_ACCESS_KEY_ID=benchaccess AWS_SECRET_ACCESS_KEY=benchsecret0123456789 AWS_REGION=us-east-1
ROOT_ACCESS_KEY=$AWS_ACCESS_KEY_ID ROOT_SECRET_KEY=$AWS_SECRET_ACCESS_KEY \
	versitygw --port 127.0.0.1:$s3port --quiet posix --versioning-dir "$work/s3versions" "$work/s3data" >s3.log 2>&1 &
pids+=($!)
sleep 1

"$nhscrypt" keygen -o key.txt 2>/dev/null
rcpt=$("$nhscrypt" keygen -y key.txt)
export RESTIC_PASSWORD=bench-password
sshcmd="ssh -p $sport -i $work/ssh/client_key -o UserKnownHostsFile=$work/ssh/known_hosts -o StrictHostKeyChecking=yes $user@127.0.0.1 -s sftp"
nflags=(--ssh-identity "$work/ssh/client_key" --ssh-known-hosts "$work/ssh/known_hosts")

# measure NAME CMD…: wall seconds and peak RSS (KiB) into NAME_wall, NAME_rss.
measure() {
	local name=$1; shift
	sync
	/usr/bin/time -f '%e %M' -o time.out "$@" >/dev/null 2>cmd.err || { cat cmd.err >&2; exit 1; }
	sync
	read -r w r < <(tail -n 1 time.out)
	printf -v "${name}_wall" '%s' "$w"
	printf -v "${name}_rss" '%s' "$r"
}
best() { if [ -z "${!1:-}" ] || [ "$(echo "$2 < ${!1}" | bc -l)" = 1 ]; then printf -v "$1" '%s' "$2"; fi; }

for r in $(seq 1 "$rounds"); do
	rm -rf "$work/sftp-n" "$work/sftp-r" "$work/st" s3data/bench/* 2>/dev/null || true
	mkdir -p "$work/sftp-n" "$work/sftp-r"
	# SFTP
	"$nhscrypt" backup --repo "sftp://$user@127.0.0.1:$sport$work/sftp-n/repo" --state-dir "$work/st/sftp" "${nflags[@]}" init -r "$rcpt" >/dev/null
	measure ns "$nhscrypt" backup --repo "sftp://$user@127.0.0.1:$sport$work/sftp-n/repo" --state-dir "$work/st/sftp" "${nflags[@]}" run src
	restic -q -r "sftp:$user@127.0.0.1:$work/sftp-r/repo" -o sftp.command="$sshcmd" init >/dev/null
	measure rs restic -q -r "sftp:$user@127.0.0.1:$work/sftp-r/repo" -o sftp.command="$sshcmd" backup src
	best b_ns_wall "$ns_wall"; best b_rs_wall "$rs_wall"; best b_ns_rss "$ns_rss"; best b_rs_rss "$rs_rss"
	# S3
	"$nhscrypt" backup --repo "s3+http://127.0.0.1:$s3port/bench/nhscrypt" --state-dir "$work/st/s3" init -r "$rcpt" >/dev/null
	measure n3 "$nhscrypt" backup --repo "s3+http://127.0.0.1:$s3port/bench/nhscrypt" --state-dir "$work/st/s3" run src
	restic -q -r "s3:http://127.0.0.1:$s3port/bench/restic" init >/dev/null
	measure r3 restic -q -r "s3:http://127.0.0.1:$s3port/bench/restic" backup src
	best b_n3_wall "$n3_wall"; best b_r3_wall "$r3_wall"; best b_n3_rss "$n3_rss"; best b_r3_rss "$r3_rss"
done
ns_bytes=$(du -sb "$work/sftp-n/repo" | cut -f1); rs_bytes=$(du -sb "$work/sftp-r/repo" | cut -f1)
n3_bytes=$(du -sb s3data/bench/nhscrypt | cut -f1); r3_bytes=$(du -sb s3data/bench/restic | cut -f1)

echo "nhscrypt: $("$nhscrypt" version)"
echo "restic:   $(restic version | head -n 1)"
echo "tree:     $(du -sb src | cut -f1) bytes in $(find src -type f | wc -l) files; best of $rounds rounds; $(nproc) cores"
printf '%-6s %-9s %9s %10s %12s %16s\n' backend tool "wall s" "peak RSS" "stored MiB" "nhscrypt/restic"
row() { printf '%-6s %-9s %9.2f %7d MiB %12.1f %16s\n' "$1" "$2" "$3" $(($4 / 1024)) "$(echo "$5 / 1048576" | bc -l)" "$6"; }
row sftp nhscrypt "$b_ns_wall" "$b_ns_rss" "$ns_bytes" "$(echo "scale=2; $b_ns_wall / $b_rs_wall" | bc -l)x"
row sftp restic "$b_rs_wall" "$b_rs_rss" "$rs_bytes" ""
row s3 nhscrypt "$b_n3_wall" "$b_n3_rss" "$n3_bytes" "$(echo "scale=2; $b_n3_wall / $b_r3_wall" | bc -l)x"
row s3 restic "$b_r3_wall" "$b_r3_rss" "$r3_bytes" ""
echo "targets: nhscrypt/restic wall ≤ 0.70x; nhscrypt peak RSS ≤ 256 MiB"
