# gptbook: one command to set up and test, one to set up and build the book. See README.md.
VENV ?= .venv
PY := $(VENV)/bin/python
NB_SANITIZE := notebooks/sanitize.cfg
# nbval with tools/nbval_tolerant.py: numbers within a tolerance, figures compared as images (see that file).
NBVAL := PYTHONPATH=tools $(PY) -m pytest -q -p nbval_tolerant --nbval --nbval-current-env --nbval-sanitize-with $(NB_SANITIZE)
# Float rounding as on another CPU: the committed outputs must still pass, so a learner's machine and the next CI
# machine do not see red. On an AVX-512 CPU, ATen's and MKL's AVX2 kernels (exactly what an AVX2-only machine runs:
# measured to reproduce outputs made on one); elsewhere ATen's portable kernels and MKL's compatible code path.
PERTURBED := $(shell grep -qw avx512f /proc/cpuinfo 2>/dev/null && echo "ATEN_CPU_CAPABILITY=avx2 MKL_CBWR=AVX2" || echo "ATEN_CPU_CAPABILITY=default MKL_CBWR=COMPATIBLE")

# What `python -m gptbook.train` does first: glibc keeps freed memory for reuse (gptbook.device; ~10 % faster steps
# for the BPE model, the same numbers).
KEEP_MEMORY := from gptbook.device import keep_freed_memory; keep_freed_memory()

.PHONY: setup data pretrain chat test lint unit notebooks notebooks-perturbed pairing book book-check lab train clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

data: setup
	$(PY) -m gptbook.corpora

# The Shakespeare model of chapters 06-08 (`python -m gptbook.pretrain`, about 5 minutes on 2 cores) and its
# character-level baseline (`python -m gptbook.pretrain char`, the same time): each trained once into
# checkpoints/<name>/, then loaded by the chapters (and by every later `make test`) until its recipe changes.
pretrain: setup data
	$(PY) -c "$(KEEP_MEMORY); from gptbook.pretrain import pretrained; pretrained(); pretrained('shakespeare-char')"

# The chat model of chapter 11 and gptbook-chat (gptbook.instruct.instructed(): LoRA on the Shakespeare model, about a
# minute), made once like the models above.
chat: pretrain
	$(PY) -c "$(KEEP_MEMORY); from gptbook.instruct import instructed; instructed()"

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check gptbook tests tools

# Two test processes: many tests wait on a subprocess or a terminal, so two share the two cores well (~2 min instead of
# ~2.5).
unit: setup data
	$(PY) -m pytest -q -n 2 tests

notebooks: setup data pretrain chat
	$(NBVAL) notebooks

notebooks-perturbed: setup data pretrain chat
	$(PERTURBED) $(NBVAL) notebooks

pairing: setup
	$(PY) tools/check_pairing.py

# The book (Jupyter Book 1): Sphinx with warnings as errors, offline, from the committed outputs (it executes
# nothing). `make test` runs `notebooks` first, which proves those outputs are what the current code prints and draws.
book: setup
	$(VENV)/bin/jupyter-book build --all -W -n --keep-going .
	@echo "book: $(CURDIR)/_build/html/index.html"

# Every page of the built book in headless Chromium (tests/test_book.py); screenshots in _build/screenshots/.
book-check: book
	GPTBOOK_BOOK_TEST=1 $(PY) -m pytest -q tests/test_book.py

# Everything CI checks: lint, unit tests, every notebook from a fresh kernel compared with its committed outputs
# (twice: as is, and with another CPU's float rounding), the jupytext pairing, the book (built with warnings as
# errors, then checked page by page in a browser).
test: lint unit notebooks notebooks-perturbed pairing book-check

# JupyterLab rooted at the repository, opening the first chapter. Rooted at notebooks/ (`jupyter lab notebooks/`),
# jupytext would not see jupytext.toml, which lies above the server's root: no .md twin, no sync on save.
lab: setup
	$(VENV)/bin/jupyter lab --ServerApp.root_dir=. notebooks/00_preface.ipynb

train: setup data
	$(PY) -m gptbook.train --data the-verdict.txt --max_iters 30 --eval_interval 10 --eval_iters 5 \
		--batch_size 8 --block_size 64 --n_layer 2 --n_head 4 --n_embd 128

clean:
	rm -rf _build checkpoints .pytest_cache .ruff_cache
