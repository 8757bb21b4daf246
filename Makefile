# rednet-deploy — the user's interface. Every target is a thin wrapper over the `rednet-deploy` CLI or a build tool.
PYTHON   ?= python3
VENV     ?= .venv
PY       := $(VENV)/bin/python
CLI      := $(VENV)/bin/rednet-deploy
BUILD    ?= build
MODEL    ?= rednet50
PRECISION ?= fp32
DYNAMIC  ?= batch
JOBS     ?= $(shell nproc 2>/dev/null || echo 2)
# TensorRT headers (10.x or 11.x) for the plugin: the first of these folders that holds NvInfer.h (a git-ignored
# third_party/ copy, then where NGC containers and Debian/Ubuntu libnvinfer-dev put them); none: plugin skipped.
TENSORRT_HEADER_DIRS ?= third_party/tensorrt/include /usr/include/$(shell uname -m)-linux-gnu /usr/include \
                        /usr/local/tensorrt/include
TENSORRT_INCLUDE_DIR ?= $(patsubst %/,%,$(dir $(firstword $(wildcard $(addsuffix /NvInfer.h,$(TENSORRT_HEADER_DIRS))))))
ORT_HEADERS_DIR := $(BUILD)/third_party/onnxruntime

.PHONY: help setup tensorrt-include test export plugins engine parity bench bench-serve serve triton-repo asan-test gpu-check clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements.txt
	$(VENV)/bin/pip install --quiet --no-deps -e .
	touch $@

setup: $(VENV)/.installed  ## create .venv, install pinned dependencies, build native libraries; GPU=1: for a GPU host
ifeq ($(GPU),1)
	$(PY) -m deploy.gpu_setup check --headers "$(TENSORRT_INCLUDE_DIR)" --requirements $(BUILD)/requirements-gpu.txt
	$(VENV)/bin/pip uninstall --quiet --yes onnxruntime
	$(VENV)/bin/pip install --quiet -r $(BUILD)/requirements-gpu.txt
endif
	@$(MAKE) --no-print-directory plugins

tensorrt-include:  # the TensorRT header folder `make plugins` uses (empty: none found)
	@echo "$(TENSORRT_INCLUDE_DIR)"

test: $(VENV)/.installed  ## run the whole test suite (pytest, then the sanitizer run of the native op)
	$(PY) -m pytest -q
	@$(MAKE) --no-print-directory asan-test

export: $(VENV)/.installed  ## MODEL= [CHECKPOINT=] [OUT=] [PRECISION=fp32|fp16] [DYNAMIC=batch|all] [OPSET=] [INLINE=1]
	$(CLI) export $(MODEL) --precision $(PRECISION) --dynamic $(DYNAMIC) \
	  $(if $(CHECKPOINT),--checkpoint $(CHECKPOINT)) $(if $(OUT),--out $(OUT)) $(if $(OPSET),--opset $(OPSET)) \
	  $(if $(INLINE),--inline-function)

plugins:  ## build the native libraries the toolchain allows (ONNX Runtime ops, CUDA kernels, TensorRT plugin)
	@mkdir -p $(BUILD); ort_root=$$(plugins/cmake/fetch_onnxruntime_headers.sh $(ORT_HEADERS_DIR)) || ort_root=; \
	torch_prefix=$$($(PY) -c 'import torch.utils; print(torch.utils.cmake_prefix_path)' 2>/dev/null) || torch_prefix=; \
	cmake -S plugins -B $(BUILD)/plugins -DONNXRUNTIME_ROOT="$$ort_root" -DCMAKE_PREFIX_PATH="$$torch_prefix" \
	  $(if $(TENSORRT_INCLUDE_DIR),-DTENSORRT_INCLUDE_DIR=$(abspath $(TENSORRT_INCLUDE_DIR))) > $(BUILD)/cmake.log \
	  || { cat $(BUILD)/cmake.log; exit 1; }; grep '^-- rednet:' $(BUILD)/cmake.log
	cmake --build $(BUILD)/plugins -j $(JOBS)
	$(BUILD)/plugins/involution_cpu_sweep
	$(BUILD)/plugins/involution_cuda_tiled_host_test
	@if [ -x $(BUILD)/plugins/cuda_driver_check_test ]; then $(BUILD)/plugins/cuda_driver_check_test; fi
	@if [ -x $(BUILD)/plugins/involution_trt_plugin_test ]; then $(BUILD)/plugins/involution_trt_plugin_test; fi

engine: $(VENV)/.installed  ## MODEL= [ONNX=] [PRECISION=] [MIN/OPT/MAX_BATCH=1/8/32] [OUT=] [TF32=1] [TRITON=1]: plan + sidecar
	@$(CLI) engine $(MODEL) --precision $(PRECISION) --min-batch $(or $(MIN_BATCH),1) --opt-batch $(or $(OPT_BATCH),8) \
	  --max-batch $(or $(MAX_BATCH),32) $(if $(ONNX),--onnx $(ONNX)) $(if $(OUT),--out $(OUT)) \
	  $(if $(filter 1,$(TF32)),--tf32) $(if $(filter 1,$(TRITON)),--embed-plugin)

parity: $(VENV)/.installed  ## MODEL= [CHECKPOINT=] [PRECISION=] [ONNX=]: PyTorch vs every backend present, table + JSON
	$(CLI) parity $(MODEL) --precision $(PRECISION) $(if $(CHECKPOINT),--checkpoint $(CHECKPOINT)) $(if $(ONNX),--onnx $(ONNX)) \
	  $(if $(filter 1,$(TF32)),--tf32)

bench: $(VENV)/.installed  ## [THREADS=2] [ROUNDS=5]: op + model benchmarks on the CPU runtimes -> bench/results/ort_cpu.{json,png}
	$(CLI) bench --threads $(or $(THREADS),2) --rounds $(or $(ROUNDS),5)

# The token never goes on a command line (ps shows those): REDNET_SERVE_TOKEN or TOKEN from the environment, or a file.
serve: $(VENV)/.installed  ## MODEL= [BACKEND=onnxruntime|tensorrt] [PORT=8000] [MAX_BATCH=] [MAX_DELAY_MS=] [HOST=] [TOKEN_FILE=] (or REDNET_SERVE_TOKEN in the env)
	$(if $(filter command line,$(origin TOKEN)),$(error TOKEN= on the make command line is visible in ps; \
	  export REDNET_SERVE_TOKEN (or TOKEN) in the environment or pass TOKEN_FILE=<file>))
	$(if $(TOKEN),REDNET_SERVE_TOKEN="$$TOKEN") $(CLI) serve $(MODEL) --backend $(or $(BACKEND),onnxruntime) \
	  --port $(or $(PORT),8000) $(if $(MAX_BATCH),--max-batch $(MAX_BATCH)) \
	  $(if $(MAX_DELAY_MS),--max-delay-ms $(MAX_DELAY_MS)) $(if $(HOST),--host $(HOST)) \
	  $(if $(TOKEN_FILE),--token-file $(TOKEN_FILE)) $(if $(ONNX),--onnx $(ONNX)) $(if $(ENGINE),--engine $(ENGINE))

triton-repo: $(VENV)/.installed  ## MODEL= ENGINE= [ONNX=] [OUT=artifacts/triton]: Triton model repository on an engine
	$(CLI) triton-repo $(MODEL) --engine $(ENGINE) $(if $(ONNX),--onnx $(ONNX)) $(if $(OUT),--out $(OUT))

bench-serve: $(VENV)/.installed  ## [THREADS=2]: service throughput/latency vs concurrency, batching on/off -> bench/results/serve_cpu.{json,png}
	$(CLI) bench serve --threads $(or $(THREADS),2)

asan-test: $(VENV)/.installed  ## AddressSanitizer + UBSan build; runs the C++ sweeps (CPU kernel, CUDA kernels on the host) and the ONNX Runtime op sweep
	@mkdir -p $(BUILD); ort_root=$$(plugins/cmake/fetch_onnxruntime_headers.sh $(ORT_HEADERS_DIR)); \
	cmake -S plugins -B $(BUILD)/asan -DREDNET_SANITIZE=ON -DREDNET_CUDA=OFF -DREDNET_TORCH=OFF -DCMAKE_BUILD_TYPE=Debug \
	  -DONNXRUNTIME_ROOT="$$ort_root" > $(BUILD)/asan-cmake.log || { cat $(BUILD)/asan-cmake.log; exit 1; }
	cmake --build $(BUILD)/asan -j $(JOBS)
	$(BUILD)/asan/involution_cpu_sweep
	$(BUILD)/asan/involution_cuda_tiled_host_test
	LD_PRELOAD="$$(gcc -print-file-name=libasan.so) $$(gcc -print-file-name=libubsan.so)" \
	  ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	  REDNET_ORT_OPS_LIB=$(BUILD)/asan/librednet_ort_ops.so $(PY) -m pytest -q -p no:cacheprovider tests/test_op_backends.py

gpu-check:  ## on a GPU machine: build CUDA kernel + plugin there, GPU parity + plugin enqueue + benchmarks -> JSON
	@nvidia-smi -L > /dev/null 2>&1 || { echo "gpu-check: no NVIDIA GPU here (nvidia-smi failed); run it on a GPU machine" >&2; exit 3; }
	@mkdir -p $(BUILD)/gpu
	cmake -S plugins -B $(BUILD)/gpu -DCMAKE_CUDA_ARCHITECTURES=native \
	  $(if $(TENSORRT_INCLUDE_DIR),-DTENSORRT_INCLUDE_DIR=$(abspath $(TENSORRT_INCLUDE_DIR))) > $(BUILD)/gpu/cmake.log \
	  || { cat $(BUILD)/gpu/cmake.log; exit 1; }; grep '^-- rednet:' $(BUILD)/gpu/cmake.log
	cmake --build $(BUILD)/gpu -j $(JOBS)
	$(BUILD)/gpu/involution_cpu_sweep
	@if [ -x $(BUILD)/gpu/involution_trt_plugin_test ]; then $(BUILD)/gpu/involution_trt_plugin_test; fi
	PYTHONPATH=$(CURDIR) $(or $(GPU_PYTHON),python3) -m deploy.gpu_check --build $(BUILD)/gpu --out bench/results/gpu_check.json

clean:  ## remove build outputs (keeps .venv)
	rm -rf $(BUILD) artifacts
