#!/usr/bin/env bash
# make demo: generate a key, encrypt a sample tree, decrypt it, and show that
# nothing changed. Everything happens in a fresh folder under /tmp.
set -euo pipefail
nhscrypt=$(realpath "${1:-bin/nhscrypt}")
work=$(mktemp -d /tmp/nhscrypt-demo.XXXXXX)
cd "$work"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "nhscrypt version"
"$nhscrypt" version

step "1. generate an age identity (written 0600; the public key goes to stderr)"
"$nhscrypt" keygen -o key.txt
ls -l key.txt
recipient=$("$nhscrypt" keygen -y key.txt)

step "2. a sample tree of (synthetic) clinical files"
mkdir -p records/clinic-a records/clinic-b
for i in $(seq 1 20); do
	printf 'NHS number: 999 %03d %04d\nName: Test Patient %d\nNote: synthetic record for the nhscrypt demo\n' "$i" "$((i * 37))" "$i" \
		> "records/clinic-$([ $((i % 2)) -eq 0 ] && echo a || echo b)/patient-$i.txt"
done
head -c 2000000 /dev/urandom > records/clinic-a/scan.bin
chmod 0640 records/clinic-a/*.txt
ln -s clinic-a/patient-2.txt records/latest
find records | sort | head -8; echo "…"

step "3. encrypt the tree to $recipient"
"$nhscrypt" encrypt --tree records --out records.enc -r "$recipient"
find records.enc -type f | sort | head -5; echo "…"
echo "header of one encrypted file:"; head -c 120 records.enc/clinic-a/patient-2.txt.age | head -n 3

step "4. decrypt the tree with the identity"
"$nhscrypt" decrypt --tree records.enc --out records.dec -i key.txt

step "5. compare: contents and modes must be identical"
diff -r records/clinic-a records.dec/clinic-a && diff -r records/clinic-b records.dec/clinic-b
stat -c '%A %n' records/clinic-a/patient-2.txt records.dec/clinic-a/patient-2.txt
echo "identical: every file decrypted to the same bytes and mode"

step "6. a wrong key is refused with exit code 10, leaving nothing behind"
"$nhscrypt" keygen -o other.txt 2>/dev/null
set +e
"$nhscrypt" decrypt -i other.txt -o wrong.txt records.enc/clinic-a/patient-2.txt.age
echo "exit code: $?"
set -e
[ ! -e wrong.txt ] && echo "wrong.txt was not created"

step "7. disk encryption health of this machine (nhscrypt verify-disk)"
set +e
"$nhscrypt" verify-disk
echo "exit code: $? (0 pass, 3 warnings, 4 failures)"
set -e

step "8. an encrypted backup of the sample tree to a local repository"
"$nhscrypt" backup init --repo "$work/backup-repo" --state-dir "$work/backup-state" -r "$recipient"
"$nhscrypt" backup run --repo "$work/backup-repo" --state-dir "$work/backup-state" --tag demo records
echo "a second run stores only what changed:"
"$nhscrypt" backup run --repo "$work/backup-repo" --state-dir "$work/backup-state" --tag demo records
"$nhscrypt" backup snapshots --repo "$work/backup-repo" --state-dir "$work/backup-state"
"$nhscrypt" backup verify --repo "$work/backup-repo" --state-dir "$work/backup-state" --read-data -i key.txt
"$nhscrypt" backup restore latest --repo "$work/backup-repo" --state-dir "$work/backup-state" --target restored -i key.txt
diff -r records/clinic-a "restored$work/records/clinic-a" && echo "restored tree identical"

step "9. key escrow in the local store (age-encrypted to the admin key): a backup identity"
# On a fleet, set VAULT_ADDR and the same commands use HashiCorp Vault.
escrow=(--store file --dir "$work/escrow")
"$nhscrypt" keygen --escrow backup-identity "${escrow[@]}" -R <(echo "$recipient") -o backup.pub
"$nhscrypt" escrow list "${escrow[@]}"
"$nhscrypt" backup init --repo "$work/escrowed-repo" --state-dir "$work/backup-state" -R backup.pub
"$nhscrypt" escrow verify "${escrow[@]}" -i key.txt --kind age-identity --repo "$work/escrowed-repo"

if command -v cryptsetup >/dev/null 2>&1 || [ -x /usr/sbin/cryptsetup ] || [ -x /sbin/cryptsetup ]; then
	export PATH=$PATH:/usr/sbin:/sbin
	step "10. a LUKS recovery key: escrowed, added to a keyslot, proven, then verified"
	printf 'demo boot passphrase' > boot.key
	truncate -s 20M disk.img
	cryptsetup luksFormat -q --type luks2 --pbkdf argon2id --pbkdf-memory 65536 --pbkdf-force-iterations 4 --key-file boot.key disk.img
	"$nhscrypt" escrow luks-enroll "${escrow[@]}" -R <(echo "$recipient") --device disk.img --key-file boot.key --name disk-recovery --state-dir "$work/enroll-state"
	"$nhscrypt" escrow verify "${escrow[@]}" -i key.txt --device disk.img --kind luks-recovery || true
	echo "restore drill: the escrowed key opens the volume (cryptsetup open --test-passphrase):"
	"$nhscrypt" escrow get "${escrow[@]}" -i key.txt disk-recovery -o - | cryptsetup open --test-passphrase --key-file - --key-slot 1 disk.img && echo "recovery key opens keyslot 1"
fi

printf '\nDemo files are in %s\n' "$work"
