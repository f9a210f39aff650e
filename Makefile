# gptbook: one command to set up and test, one to set up and build the book. See README.md.
VENV ?= .venv
PY := $(VENV)/bin/python
NB_SANITIZE := notebooks/sanitize.cfg

.PHONY: setup data test lint unit notebooks pairing book train clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

data: setup
	$(PY) -c "from gptbook.data import find_verdict; print('corpus:', find_verdict('the-verdict.txt'))"

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check gptbook tests tools

unit: setup data
	$(PY) -m pytest -q tests

notebooks: setup data
	$(PY) -m pytest -q --nbval --nbval-current-env --nbval-sanitize-with $(NB_SANITIZE) notebooks

pairing: setup
	$(PY) tools/check_pairing.py

# Everything CI checks: lint, unit tests, every notebook under strict nbval, the jupytext pairing.
test: lint unit notebooks pairing

train: setup data
	$(PY) -m gptbook.train --data the-verdict.txt --max_iters 30 --eval_interval 10 --eval_iters 5 \
		--batch_size 8 --block_size 64 --n_layer 2 --n_head 4 --n_embd 128

clean:
	rm -rf _build checkpoints .pytest_cache .ruff_cache
