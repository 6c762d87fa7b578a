# Two commands: `make demo` and `make test`; each does its own set-up on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The CPU build of torch where there is no GPU (here: a wheel on local disk); override for CUDA.
TORCH_SPEC ?= torch==2.13.0
TORCH_PIP_ARGS ?=

export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export PREFECT_HOME ?= $(CURDIR)/.prefect
# Run logs at INFO reach the Prefect API (the UI shows each run's summary); the terminal shows
# warnings only (the CLI prints its own summary).
export PREFECT_LOGGING_LEVEL ?= INFO
export PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL ?= WARNING
# No usage reports from Prefect or MLflow (MLflow honours "true", not "1").
export DO_NOT_TRACK ?= true

.PHONY: setup demo ui test test-fast lint deploy clean browser

setup: $(STAMP)

# torch through pip (which finds the local CPU wheel); the rest through uv, which fetches and
# installs in parallel: 25 s against pip's 111 s here, with an empty cache each. The bytecode
# is written at install time: where PYTHONDONTWRITEBYTECODE is set (as here) nothing else
# would, and every process of the suite would compile torch, mlflow and prefect again (1.8x
# its time); uv compiles what it installs, compileall torch, on every core. uv trusts the
# system's certificates as pip does (a TLS proxy's CA); where uv fails, pip installs the rest.
PIP_FLAGS ?= -q --disable-pip-version-check
UV_SPEC ?= uv==0.13.9

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install $(PIP_FLAGS) --no-compile "$(TORCH_SPEC)" $(TORCH_PIP_ARGS) "$(UV_SPEC)"
	$(VENV)/bin/uv pip install -q --system-certs --python $(PY) --compile-bytecode -c constraints.txt -e ".[test]" || \
	  $(PY) -m pip install $(PIP_FLAGS) -c constraints.txt -e ".[test]"
	$(PY) -m compileall -q -j 0 "$$($(PY) -c 'import importlib.util as u; print(u.find_spec("torch").submodule_search_locations[0])')" >/dev/null || : # as pip: a file that is not 3.11 stays uncompiled
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/srcnn pipeline

# The MLflow and Prefect UIs over what `make demo` recorded (its PREFECT_HOME, ./.prefect).
ui: $(STAMP)
	$(VENV)/bin/srcnn ui

# Two test processes (pytest-xdist), a file each at a time: most of the suite waits on real
# servers and subprocesses, so two keep both cores busy. TEST_WORKERS=0 runs in one process.
# One torch/OpenMP thread per process unless OMP_NUM_THREADS says otherwise: two processes
# of two spinning threads each on two cores slowed the training tests by half.
TEST_WORKERS ?= 2
test: $(STAMP) lint browser
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(VENV)/bin/pytest -q -ra --durations=12 \
	  -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

# The browser the UI tests look through: Debian's chromium and its driver, installed with
# apt-get where missing (as root, or with sudo); nothing downloads a browser at run time.
# Where neither can be had, the UI tests fail and say so.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 || \
	  { $$SUDO apt-get update -q >/dev/null && $$SUDO apt-get install -y -q chromium chromium-driver >/dev/null; } || \
	  echo "browser: could not install chromium and chromium-driver: the UI tests will fail" >&2; }

# Lint as a habit: ruff (pyflakes, import order, bugbear, pyupgrade) and the import contracts
# of pyproject.toml (flows -> tasks -> srcnn, and the layers inside srcnn/).
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

clean:
	rm -rf demo-output mlflow.db mlartifacts .prefect

# Register the deployments of deployments/prefect.yaml with a running Prefect server
# (infra/compose.yaml starts one): `PREFECT_API_URL=http://localhost:4200/api make deploy`.
WORK_POOL ?= srcnn-process
deploy: $(STAMP)
	@test -n "$$PREFECT_API_URL" || { echo "deploy: set PREFECT_API_URL, e.g. http://localhost:4200/api" >&2; exit 1; }
	@out=$$($(VENV)/bin/prefect work-pool create $(WORK_POOL) --type process 2>&1) || \
	  echo "$$out" | grep -q "already exists" || { echo "$$out" >&2; exit 1; }
	$(VENV)/bin/prefect --no-prompt deploy --all --prefect-file deployments/prefect.yaml
