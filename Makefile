# nhscrypt build, test and demo. See README.md.
GO        ?= go
PREFIX    ?= /usr/local
BIN       := bin/nhscrypt
FUZZTIME  ?= 10s
# Debian packages the tests drive for real (interop and fixtures).
TEST_DEBS := age openssh-client cryptsetup-bin
BENCH_DEBS := $(TEST_DEBS) bc
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2

.PHONY: all build test test-deps bench-deps debs lint fuzz bench install demo clean

all: build

build:
	$(GO) build -trimpath -o $(BIN) ./cmd/nhscrypt

# Install the Debian packages the tests need, then run every test.
test: test-deps
	$(GO) test -count=1 -timeout 20m ./...

test-deps:
	@$(MAKE) --no-print-directory debs DEBS="$(TEST_DEBS)"

bench-deps:
	@$(MAKE) --no-print-directory debs DEBS="$(BENCH_DEBS)"

# Install the Debian packages in DEBS that are missing (apt-get update first).
debs:
	@missing=""; for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing test packages:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
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

bench: build bench-deps
	$(GO) test -run='^$$' -bench=. -benchmem ./...
	bash bench/filecrypt.sh
	bash bench/verify-disk.sh

install: build
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/nhscrypt

# Build and run the main job on this machine with embedded defaults.
demo: build
	bash scripts/demo.sh $(BIN)

clean:
	rm -rf bin
