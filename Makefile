# ferrymq — run "make" or "make help" for the targets.

GO          ?= go
BIN         ?= bin
PKG         := ./cmd/ferrymq
VERSION     ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS     := -s -w -X main.version=$(VERSION)
BUILD       := CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)'
FUZZTIME    ?= 60s
# "make test-arm32" runs the armv7 test binaries through qemu-user.
QEMU_ARM    ?= qemu-arm-static
ARM32_PKGS  ?= ./persist/...
# staticcheck runs through the Go module proxy at this pinned version.
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2
# Platforms for "make cross": GOOS/GOARCH[/GOARM].
PLATFORMS   := linux/amd64 linux/arm64 linux/arm/7

.DEFAULT_GOAL := help
.PHONY: help build test race fuzz bench cross test-arm32 generate-check lint clean

help: ## Show the targets
	@echo "Usage: make <target>"
	@awk 'BEGIN { FS = ":.*## " } /^[a-zA-Z0-9_-]+:.*## / { printf "  %-15s %s\n", $$1, $$2 }' $(MAKEFILE_LIST)

build: ## Build a static binary: bin/ferrymq (version from git describe)
	$(BUILD) -o $(BIN)/ferrymq $(PKG)

test: ## Vet, then run the whole test suite with the race detector, and the broker's again on the real store (what CI runs)
	$(GO) vet ./...
	$(GO) test -race -count=1 ./...
	FERRYMQ_TEST_STORE=badger $(GO) test -race -count=1 ./broker/

race: ## Run the tests with the race detector (cached results allowed)
	$(GO) test -race ./...

fuzz: ## Fuzz the packet decoder for FUZZTIME (default 60s)
	$(GO) test -run '^$$' -fuzz FuzzDecode -fuzztime $(FUZZTIME) ./broker/packet/

bench: ## Run every benchmark with allocation counts
	$(GO) test -run '^$$' -bench . -benchmem ./...

cross: ## Build bin/ferrymq-linux-{amd64,arm64,arm} (arm is GOARM=7); every package must compile for each
	@set -e; for p in $(PLATFORMS); do \
		os=$${p%%/*}; rest=$${p#*/}; arch=$${rest%%/*}; arm=; \
		case $$rest in */*) arm=$${rest#*/};; esac; \
		echo "$$os/$$arch$${arm:+ GOARM=$$arm} -> $(BIN)/ferrymq-$$os-$$arch"; \
		GOOS=$$os GOARCH=$$arch GOARM=$$arm $(BUILD) -o $(BIN)/ferrymq-$$os-$$arch $(PKG); \
		GOOS=$$os GOARCH=$$arch GOARM=$$arm CGO_ENABLED=0 $(GO) build ./...; \
	done

test-arm32: ## Run the store's tests (and the ristretto patch's) as armv7 binaries under qemu-user (apt-get install qemu-user-static)
	@command -v $(QEMU_ARM) >/dev/null || { echo "$(QEMU_ARM) not found: apt-get install qemu-user-static"; exit 1; }
	GOOS=linux GOARCH=arm GOARM=7 CGO_ENABLED=0 $(GO) test -count=1 -timeout 5m -exec $(QEMU_ARM) $(ARM32_PKGS)
	cd third_party/ristretto && GOOS=linux GOARCH=arm GOARM=7 CGO_ENABLED=0 $(GO) test -count=1 -exec $(QEMU_ARM) -run AllocatorSpill ./z/

generate-check: ## go generate ./... must leave the tree as it was (generated code is committed)
	@git rev-parse --git-dir >/dev/null || exit 1; \
	before=$$( { git status --porcelain --untracked-files=all; git diff; } | sha256sum); \
	$(GO) generate ./... || exit 1; \
	after=$$( { git status --porcelain --untracked-files=all; git diff; } | sha256sum); \
	if [ "$$before" != "$$after" ]; then \
		echo "go generate ./... changed the tree: commit the regenerated files"; \
		git status --porcelain --untracked-files=all; git --no-pager diff --stat; exit 1; \
	fi; echo "go generate ./...: no change"

lint: ## gofmt (must list nothing), go vet and staticcheck
	@out=$$(gofmt -l .); \
	if [ -n "$$out" ]; then echo "gofmt -w needed on:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	@if $(GO) run $(STATICCHECK) -version >/dev/null 2>&1; then \
		echo "staticcheck ./..."; $(GO) run $(STATICCHECK) ./...; \
	else \
		echo "staticcheck ($(STATICCHECK)) not available through the module proxy: skipped"; \
	fi

clean: ## Remove build output
	rm -rf $(BIN)
