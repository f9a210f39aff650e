"""Remove what only says where and when a notebook was executed: execution timestamps, and local paths in tracebacks;
keep a progress bar's last state only: in a cell whose output has carriage returns, each stream is joined into one
and what a carriage return overwrote is dropped, exactly as nbval does before comparing.

Usage: python tools/clean_notebook.py notebooks/NN_x.ipynb [...]   (tools/execute_notebook.sh runs it)
nbval compares neither, so cleaning changes no check; the book then shows no path of the machine that ran it.
"""

import re
import sys
from pathlib import Path

import nbformat
from nbval.plugin import coalesce_streams

ROOT = str(Path(__file__).resolve().parents[1])
SITE = re.compile(r"/[^\s\x1b\"']*?/site-packages/")  # .../lib/python3.11/site-packages/ -> site-packages/


def clean(path):
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        if any("\r" in o.get("text", "") for o in cell.get("outputs", [])):  # a progress bar's frames
            cell.outputs = coalesce_streams(cell.outputs)  # as nbval compares: one stream per name, \r applied
        for out in cell.get("outputs", []):
            if out.output_type == "error":
                out.traceback = [SITE.sub("site-packages/", line).replace(ROOT + "/", "") for line in out.traceback]
    nbformat.write(nb, path)


if __name__ == "__main__":
    for p in sys.argv[1:]:
        clean(p)
