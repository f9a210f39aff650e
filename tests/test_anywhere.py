"""The book outside its checkout: a wheel in a fresh venv, two chapters copied alone into an empty folder.

The venv starts with only a kernel; each chapter's first cell installs the wheel (GPTBOOK_PIP) as in Colab, and the
corpus is found in the package's own data folder (~/.cache/gptbook), not next to the notebook. Chapter 00 checks the
environment; chapter 04 trains two small models. About a minute: pip installs from this machine's wheel cache.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(*cmd, **kw):
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    return r


def test_two_chapters_run_from_a_wheel_outside_the_checkout(tmp_path):
    dist, venv, home, book = tmp_path / "dist", tmp_path / "venv", tmp_path / "home", tmp_path / "book"
    code = "import sys; from setuptools import build_meta as b; print(b.build_wheel(sys.argv[1]))"
    wheel = dist / run(sys.executable, "-c", code, dist, cwd=ROOT).stdout.split()[-1]
    run(sys.executable, "-m", "venv", venv)
    pins = ROOT / "requirements-dev.txt"  # the pinned versions (torch: the CPU build this machine's index serves)
    run(venv / "bin/python", "-m", "pip", "install", "-q", "-c", pins, "ipykernel", "nbclient")
    (home / ".cache/gptbook").mkdir(parents=True)
    shutil.copy(ROOT / "the-verdict.txt", home / ".cache/gptbook")  # as `python -m gptbook.corpora` leaves it
    book.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GPTBOOK", "PYTHON", "VIRTUAL_ENV"))}
    env |= {
        "HOME": str(home),
        "GPTBOOK_PIP": str(wheel),
        "PIP_CONSTRAINT": str(pins),
        "PATH": f"{venv}/bin:/usr/bin:/bin",
    }
    for name in ("00_preface.ipynb", "04_causal_mask.ipynb"):
        shutil.copy(ROOT / "notebooks" / name, book)
        run(venv / "bin/jupyter-execute", "--inplace", name, cwd=book, env=env, timeout=600)
        cells = json.loads((book / name).read_text())["cells"]
        errors = [o for c in cells for o in c.get("outputs", []) if o["output_type"] == "error"]
        tagged = [c for c in cells if "raises-exception" in c.get("metadata", {}).get("tags", [])]
        assert len(errors) == len(tagged), [e["evalue"] for e in errors]
    where = run(venv / "bin/python", "-c", "import gptbook; print(gptbook.__file__)", cwd=book, env=env).stdout
    assert where.startswith(str(venv)), where  # the wheel, not this checkout
