# nhscrypt build, test and demo. See README.md.
GO        ?= go
PREFIX    ?= /usr/local
BIN       := bin/nhscrypt
FUZZTIME  ?= 10s
# Debian packages the tests drive for real (interop and fixtures).
TEST_DEBS := age openssh-client cryptsetup-bin nginx-light openssl sslscan postfix dovecot-imapd dovecot-pop3d postgresql slapd ldap-utils mariadb-server vsftpd openssh-server zstd
BENCH_DEBS := $(TEST_DEBS) bc testssl.sh restic time
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
# Go-built servers the tests run for real: versitygw is the S3-compatible one.
VERSITYGW_VERSION := v1.8.0
VERSITYGW := github.com/versity/versitygw/cmd/versitygw@$(VERSITYGW_VERSION)

.PHONY: all build test test-deps test-tools bench-deps debs lint fuzz bench install demo clean

all: build

build:
	$(GO) build -trimpath -o $(BIN) ./cmd/nhscrypt

# Install the Debian packages the tests need, then run every test.
test: test-deps test-tools
	$(GO) test -count=1 -timeout 20m ./...

test-deps:
	@$(MAKE) --no-print-directory debs DEBS="$(TEST_DEBS)"

# Build the Go test servers into $(go env GOBIN) or $(go env GOPATH)/bin,
# unless that release is already there (about 2.5 minutes cold).
# Vault's dev server is built by scripts/install-vault.sh into a cache
# folder outside the repo (about 6 minutes and 3 GB of modules cold).
test-tools:
	@bin=$$($(GO) env GOBIN); [ -n "$$bin" ] || bin=$$($(GO) env GOPATH | cut -d: -f1)/bin; \
	if ! $(GO) version -m "$$bin/versitygw" 2>/dev/null | grep -q 'versity/versitygw[[:space:]]*$(VERSITYGW_VERSION)[[:space:]]'; then \
		echo "installing $(VERSITYGW)"; $(GO) install $(VERSITYGW); \
	fi
	@GO="$(GO)" bash scripts/install-vault.sh >/dev/null

bench-deps:
	@$(MAKE) --no-print-directory debs DEBS="$(BENCH_DEBS)"

# Install the Debian packages in DEBS that are missing (apt-get update first).
# policy-rc.d keeps the installs from starting system daemons (postfix,
# dovecot, slapd, PostgreSQL, nginx): the tests start their own instances
# on 127.0.0.1 high ports and touch no system service.
debs:
	@missing=""; for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing test packages:$$missing"; \
		added_policy=""; if [ ! -e /usr/sbin/policy-rc.d ]; then \
			printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && added_policy=1; \
		fi; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; rc=$$?; \
		[ -z "$$added_policy" ] || rm -f /usr/sbin/policy-rc.d; \
		exit $$rc; \
	fi

lint:
	@out=$$(gofmt -l $$(find . -name '*.go' -not -path './.git/*')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	@if $(GO) run $(STATICCHECK) -version >/dev/null 2>&1; then \
		$(GO) run $(STATICCHECK) ./...; \
	else echo "staticcheck unavailable from the module proxy; skipped"; fi

# Short run of every fuzz target (FUZZTIME each).
fuzz:
	@set -e; for f in $$(grep -rl --include='*_test.go' '^func Fuzz' .); do \
		pkg=./$$(dirname $$f); \
		for t in $$(grep -o '^func Fuzz[A-Za-z0-9_]*' $$f | sed 's/^func //'); do \
			echo "== $$pkg $$t"; \
			$(GO) test -run='^$$' -fuzz="^$$t$$" -fuzztime=$(FUZZTIME) $$pkg; \
		done; \
	done

bench: build bench-deps test-tools
	$(GO) test -run='^$$' -bench=. -benchmem ./...
	bash bench/filecrypt.sh
	bash bench/verify-disk.sh
	bash bench/tls.sh
	bash bench/backup.sh
	bash bench/backup-offsite.sh

install: build
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/nhscrypt

# Build and run the main job on this machine with embedded defaults.
demo: build
	bash scripts/demo.sh $(BIN)

clean:
	rm -rf bin
