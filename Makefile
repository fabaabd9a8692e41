# Two commands a newcomer needs: `make book` and `make test` (see README.md).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip -q --disable-pip-version-check
STAMP := $(VENV)/.installed
MATHJAX := _extra/mathjax/tex-chtml.js
# MathJax 3.2.2 from PyPI (django-static-mathjax ships the es5 build), served from the book itself:
# a CDN is not reachable offline, and math would render as raw TeX.
MATHJAX_PKG := django-static-mathjax==3.2.2.1

.PHONY: book test unit venv clean clean-data help

help:
	@echo "make book   - create .venv, install, execute every notebook, build the HTML book into _build/html"
	@echo "make test   - unit tests, a strict book build, and nbval over the executed notebooks"

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "Python 3.11 is required (set PYTHON=...)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip 2>&1 | grep -v "is ignored" || true
	$(PIP) install -r requirements.txt 2>&1 | grep -v "is ignored" ; test $${PIPESTATUS[0]} -eq 0
	$(PIP) install --no-deps -e . 2>&1 | grep -v "is ignored" ; test $${PIPESTATUS[0]} -eq 0
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

$(MATHJAX): $(STAMP)
	$(PIP) install --no-deps $(MATHJAX_PKG) 2>&1 | grep -v "is ignored" ; test $${PIPESTATUS[0]} -eq 0
	$(PY) tools/install_mathjax.py _extra/mathjax

book: $(STAMP) $(MATHJAX)
	$(VENV)/bin/jupyter-book build --all -W --keep-going --path-output . .
	@echo "The book is in _build/html/index.html"

test: $(STAMP) $(MATHJAX)
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH tools/run_tests.sh

unit: $(STAMP)
	$(VENV)/bin/pytest -q tests

clean:
	rm -rf _build

clean-data:
	find data -mindepth 1 ! -name README.md -delete
