#!/usr/bin/env bash
# Builds the HashiCorp Vault server that the keystore tests run as
# `vault server -dev` on 127.0.0.1 (keystore/vault/vaulttest), once, into a
# cache folder outside the repo; a no-op when it is already there. Prints
# the binary's path on stdout, progress on stderr. `make test` runs it.
#
# No Vault binary is packaged for Debian, so it is built from its Go module
# (github.com/hashicorp/vault@v$VAULT_VERSION, from the Go module proxy).
# Vault releases since 1.15 (this one too) are under the Business Source
# License 1.1, which allows this non-production use (running it in our
# tests); nhscrypt itself uses only the MPL-2.0 client module
# github.com/hashicorp/vault/api and neither ships nor embeds Vault.
#
# The module's go.mod replaces its nested modules (api, sdk) with folders
# that a module download does not contain, so the script builds a writable
# copy that uses the released ones instead. No released sdk matches Vault
# 1.21.4's own copy exactly, so it uses sdk v0.21.0 and patches three lines
# of Vault where their signatures differ (framework.Backend.ActivationFunc
# takes a third string argument; keysutil's RestorePolicy returns only an
# error). Each patch is checked to have applied.
#
# It is built with Vault's own `minimal` build tag, which leaves out the
# cloud and database plugins but keeps everything the tests use (KV v2,
# transit, AppRole and certificate auth, dev mode): half the compile time
# of the full server, a 140 MB binary instead of 365 MB.
#
# Cost, measured cold (empty module and build caches) on the 2-core
# machine while others ran tests: 5.6 min in all, of which ~40 s module
# downloads (2.9 GB in the module cache, 1.9 GB in the build cache);
# 8.7 CPU-minutes. Afterwards a run of this script costs nothing.
#
# Cache folder: $NHSCRYPT_TEST_CACHE, else /var/cache/nhscrypt-test when
# writable (CI runs as root), else ${XDG_CACHE_HOME:-~/.cache}/nhscrypt-test.
# The binary is CACHE/vault-VERSION/vault, linked from CACHE/bin/vault, where
# the tests look for it (or set NHSCRYPT_VAULT_BIN).
set -euo pipefail

VAULT_VERSION=1.21.4
SDK_VERSION=v0.21.0
GO=${GO:-go}

log() { echo "install-vault: $*" >&2; }
applied() { grep -q "$1" "$2" || { log "patching $2 failed: the source is not the expected Vault $VAULT_VERSION"; exit 1; }; }

cache=${NHSCRYPT_TEST_CACHE:-}
if [ -z "$cache" ]; then
	if mkdir -p /var/cache/nhscrypt-test 2>/dev/null && [ -w /var/cache/nhscrypt-test ]; then
		cache=/var/cache/nhscrypt-test
	else
		cache=${XDG_CACHE_HOME:-$HOME/.cache}/nhscrypt-test
	fi
fi
dest=$cache/vault-$VAULT_VERSION
bin=$dest/vault
mkdir -p "$cache/bin"

installed() { [ -x "$bin" ] && "$bin" version 2>/dev/null | grep -q "Vault v$VAULT_VERSION"; }

if installed; then
	ln -sfn "$bin" "$cache/bin/vault"
	echo "$bin"
	exit 0
fi

# One build at a time (parallel `make test` runs share the cache).
exec 9>"$cache/vault.lock"
flock 9
if installed; then
	ln -sfn "$bin" "$cache/bin/vault"
	echo "$bin"
	exit 0
fi

work=$(mktemp -d "$cache/vault-build.XXXXXX")
trap 'rm -rf "$work"; kill "$beat" 2>/dev/null || true' EXIT
beat=

log "building Vault $VAULT_VERSION for the tests into $dest (first run only: about 1 min of downloads and 5 min of compiling on 2 cores)"
start=$(date +%s)

# Outside any module, so the project's go.mod and go.sum are not touched.
moddir=$(cd "$work" && GOFLAGS=-mod=mod GOTOOLCHAIN=local "$GO" mod download -json "github.com/hashicorp/vault@v$VAULT_VERSION" |
	sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
if [ -z "$moddir" ] || [ ! -f "$moddir/go.mod" ]; then
	log "could not download github.com/hashicorp/vault@v$VAULT_VERSION"
	exit 1
fi
cp -r "$moddir" "$work/src"
chmod -R u+w "$work/src"
cd "$work/src"

# Use the released nested modules instead of the missing folders.
for m in api api/auth/approle api/auth/kubernetes api/auth/userpass sdk; do
	"$GO" mod edit -dropreplace="github.com/hashicorp/vault/$m"
done
"$GO" mod edit -require="github.com/hashicorp/vault/sdk@$SDK_VERSION"
sed -i 's/^func (i \*IdentityStore) activateDeduplication(ctx context.Context, req \*logical.Request) error {$/func (i *IdentityStore) activateDeduplication(ctx context.Context, req *logical.Request, _ string) error {/' vault/identity_store_util.go
sed -i 's/b\.idStoreBackend\.ActivationFunc(ctx, nil); err != nil/b.idStoreBackend.ActivationFunc(ctx, nil, ""); err != nil/' vault/logical_system_activation_flags.go
sed -i 's/^\trestoredKeyName, err := b\.lm\.RestorePolicy(ctx, req\.Storage, keyName, backupB64, force)$/\trestoredKeyName, err := keyName, b.lm.RestorePolicy(ctx, req.Storage, keyName, backupB64, force)/' builtin/logical/transit/path_restore.go
applied 'activateDeduplication(ctx context.Context, req \*logical.Request, _ string)' vault/identity_store_util.go
applied 'restoredKeyName, err := keyName, b.lm.RestorePolicy' builtin/logical/transit/path_restore.go
applied 'ActivationFunc(ctx, nil, "")' vault/logical_system_activation_flags.go

export GOFLAGS="-mod=mod -buildvcs=false -trimpath" GOTOOLCHAIN=local CGO_ENABLED=0
log "downloading Vault's dependencies"
if ! "$GO" list -deps -tags minimal . >/dev/null 2>"$work/download.log"; then
	cat "$work/download.log" >&2
	exit 1
fi
log "downloads done after $(($(date +%s) - start)) s ($(grep -c '^go: downloading' "$work/download.log" || true) modules fetched); compiling"
(while sleep 60; do log "still compiling ($(($(date +%s) - start)) s so far)"; done) &
beat=$!
"$GO" build -tags minimal -ldflags="-s -w" -o "$work/vault" .
kill "$beat" 2>/dev/null || true

"$work/vault" version >&2
mkdir -p "$dest"
mv "$work/vault" "$bin"
ln -sfn "$bin" "$cache/bin/vault"
log "built in $(($(date +%s) - start)) s: $bin"
echo "$bin"
