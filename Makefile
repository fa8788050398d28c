# ferrymq — run "make" or "make help" for the targets.

GO          ?= go
BIN         ?= bin
PKG         := ./cmd/ferrymq
VERSION     ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS     := -s -w -X main.version=$(VERSION)
BUILD       := CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)'
FUZZTIME    ?= 60s
# staticcheck runs through the Go module proxy at this pinned version.
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2
# Platforms for "make cross": GOOS/GOARCH[/GOARM].
PLATFORMS   := linux/amd64 linux/arm64 linux/arm/7

.DEFAULT_GOAL := help
.PHONY: help build test race fuzz bench cross lint clean

help: ## Show the targets
	@echo "Usage: make <target>"
	@awk 'BEGIN { FS = ":.*## " } /^[a-zA-Z_-]+:.*## / { printf "  %-8s %s\n", $$1, $$2 }' $(MAKEFILE_LIST)

build: ## Build a static binary: bin/ferrymq (version from git describe)
	$(BUILD) -o $(BIN)/ferrymq $(PKG)

test: ## Vet, then run the whole test suite with the race detector (what CI runs)
	$(GO) vet ./...
	$(GO) test -race -count=1 ./...

race: ## Run the tests with the race detector (cached results allowed)
	$(GO) test -race ./...

fuzz: ## Fuzz the packet decoder for FUZZTIME (default 60s)
	$(GO) test -run '^$$' -fuzz FuzzDecode -fuzztime $(FUZZTIME) ./broker/packet/

bench: ## Run every benchmark with allocation counts
	$(GO) test -run '^$$' -bench . -benchmem ./...

cross: ## Build bin/ferrymq-linux-{amd64,arm64,arm} (arm is GOARM=7)
	@set -e; for p in $(PLATFORMS); do \
		os=$${p%%/*}; rest=$${p#*/}; arch=$${rest%%/*}; arm=; \
		case $$rest in */*) arm=$${rest#*/};; esac; \
		echo "$$os/$$arch$${arm:+ GOARM=$$arm} -> $(BIN)/ferrymq-$$os-$$arch"; \
		GOOS=$$os GOARCH=$$arch GOARM=$$arm $(BUILD) -o $(BIN)/ferrymq-$$os-$$arch $(PKG); \
	done

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
