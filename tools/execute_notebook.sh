#!/usr/bin/env bash
# Execute notebooks from a fresh kernel and keep their MyST twins in sync.
# Usage: tools/execute_notebook.sh notebooks/03_attention.md [more .md or .ipynb ...]
# The .md twin is the source you edit; the executed .ipynb (with outputs) is what nbval checks.
set -euo pipefail
PY=${PY:-.venv/bin/python}
for f in "$@"; do
  md="${f%.*}.md"; nb="${f%.*}.ipynb"
  "$PY" -m jupytext --quiet --to ipynb --update -o "$nb" "$md" 2>/dev/null || "$PY" -m jupytext --quiet --to ipynb -o "$nb" "$md"
  (cd "$(dirname "$nb")" && "../$PY" -m jupyter execute --inplace --timeout=600 "$(basename "$nb")")
  "$PY" tools/clean_notebook.py "$nb"  # no timestamps, no local paths in tracebacks
  "$PY" -m jupytext --quiet --sync "$nb"
done
