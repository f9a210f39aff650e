import json
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent


def pins(path):
    """name==version lines of a requirements file, following -r includes."""
    out = {}
    for line in (ROOT / path).read_text().splitlines():
        line = line.split("#")[0].strip()
        if line.startswith("-r "):
            out.update(pins(line[3:].strip()))
        elif "==" in line:
            name, version = line.split("==")
            out[name.strip().lower()] = version.strip()
    return out


def test_environment_yml_has_the_same_pins_as_requirements():
    env = {}
    for m in re.finditer(r"^\s+- ([\w.-]+)==([\w.+-]+)\s*$", (ROOT / "environment.yml").read_text(), re.M):
        env[m.group(1).lower()] = m.group(2)
    assert env == pins("requirements-dev.txt")


def python_floor():
    """The oldest Python that pyproject.toml's requires-python admits, e.g. "3.11"."""
    spec = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    m = re.fullmatch(r">=\s*(\d+\.\d+)", spec)
    assert m, f"requires-python should be a plain lower bound, not {spec!r}"
    return m.group(1)


def test_requires_python_is_supported_by_every_pin():
    """numpy 2.4, regex 2026, matplotlib 3.11 need Python 3.11: requires-python must not promise 3.10."""
    floor, checked = Version(python_floor()), []
    for name, version in pins("requirements-dev.txt").items():
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        if Version(dist.version).public != version:
            continue  # another version installed here: its metadata says nothing about the pin
        if spec := dist.metadata.get("Requires-Python"):
            assert floor in SpecifierSet(spec), f"{name}=={version} needs Python {spec}, requires-python admits {floor}"
        checked.append(name)
    assert {"numpy", "torch"} <= set(checked)


def test_python_version_stated_alike():
    floor = python_floor()
    for doc in ("README.md", "intro.md"):
        text = (ROOT / doc).read_text()
        assert f"Python ≥ {floor}" in text and not re.search(r"Python ≥ (?!" + re.escape(floor) + ")", text), doc
    assert f"- python={floor}\n" in (ROOT / "environment.yml").read_text()
    assert f'target-version = "py{floor.replace(".", "")}"' in (ROOT / "pyproject.toml").read_text()


def test_torch_pinned_exactly_and_pyproject_range_admits_it():
    assert pins("requirements.txt")["torch"] == "2.13.0"
    assert '"torch>=2.2,<2.14"' in (ROOT / "pyproject.toml").read_text()


def test_corpora_are_never_committed():
    from gptbook.corpora import CORPORA

    for c in CORPORA.values():
        assert c.file in (ROOT / ".gitignore").read_text().splitlines()
        tracked = subprocess.run(["git", "ls-files", c.file], cwd=ROOT, capture_output=True, text=True)
        assert tracked.stdout.strip() == ""


def test_every_chapter_starts_with_the_same_install_cell():
    """Colab or a copied chapter: the first code cell installs gptbook when it is missing, and only then."""
    firsts = {}
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(nb.read_text(encoding="utf-8"))["cells"]
        firsts[nb.name] = "".join(next(c for c in cells if c["cell_type"] == "code")["source"])
    assert len(set(firsts.values())) == 1, firsts
    source = firsts.popitem()[1]
    assert 'find_spec("gptbook") is None' in source and "GPTBOOK_PIP" in source


def test_unit_tests_collect_without_pyyaml():
    """PyYAML is no test dependency: only the browser check of the built book reads _toc.yml with it."""
    code = "import sys, pytest; sys.modules['yaml'] = None; sys.exit(pytest.main(['--collect-only', '-q', 'tests']))"
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:]


def test_sdist_carries_licence_tests_and_pins(tmp_path):
    """The sdist: LICENSE, every test file (conftest.py too), the pinned requirements; SPDX metadata, no deprecation."""
    import tarfile

    import setuptools

    if Version(setuptools.__version__) < Version("77"):
        pytest.skip(f"setuptools {setuptools.__version__}: SPDX `license` needs >= 77 (pyproject's build-system)")
    code = "import sys; from setuptools import build_meta as b; print(b.build_sdist(sys.argv[1]))"
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "deprecat" not in (r.stdout + r.stderr).lower(), r.stderr[-3000:]
    with tarfile.open(tmp_path / r.stdout.split()[-1]) as tar:
        top = tar.getnames()[0].split("/")[0]
        names = {n.removeprefix(top + "/") for n in tar.getnames()}
        pkg_info = tar.extractfile(f"{top}/PKG-INFO").read().decode()
    tests = {f"tests/{p.name}" for p in (ROOT / "tests").glob("*.py")}
    assert {"LICENSE", "requirements.txt", "requirements-dev.txt", "environment.yml", "tests/conftest.py"} <= names
    assert tests <= names, sorted(tests - names)
    assert "License-Expression: MIT" in pkg_info and "License-File: LICENSE" in pkg_info
    assert f"Requires-Python: >={python_floor()}" in pkg_info
    assert "Classifier: Programming Language :: Python :: 3 :: Only" in pkg_info


def test_make_lab_keeps_the_jupytext_pairing():
    """JupyterLab's jupytext looks for jupytext.toml only up to the server's root: `make lab` roots it at the repo."""
    cm_class = pytest.importorskip("jupytext").TextFileContentsManager
    target = r"^lab:.*\n\t\S*jupyter lab --ServerApp\.root_dir=(\S+) (\S+)$"
    m = re.search(target, (ROOT / "Makefile").read_text(), re.M)
    assert m, "Makefile: no `lab` target starting JupyterLab with an explicit root_dir"
    root, notebook = (ROOT / m.group(1)).resolve(), m.group(2)
    assert (root / notebook).is_file()
    assert "ipynb,md:myst" in str(cm_class(root_dir=str(root)).get_config(notebook).formats)
    # Rooted at notebooks/ (the old README's `jupyter lab notebooks/`), the pairing is off.
    assert "md:myst" not in str(cm_class(root_dir=str(ROOT / "notebooks")).get_config("00_preface.ipynb").formats)
    for doc in ("README.md", "intro.md"):
        text = (ROOT / doc).read_text()
        assert "make lab" in text and not re.search(r"^\s*\S*jupyter lab notebooks/", text, re.M), doc


def test_environment_yml_installs_gptbook_itself():
    """Without `-e .` the conda environment has every pin but not gptbook: the notebooks' imports fail."""
    text = (ROOT / "environment.yml").read_text()
    pip_lines = re.findall(r"^\s+- (\S.*?)\s*$", text.split("- pip:", 1)[1], re.M)
    assert "-e ." in pip_lines, pip_lines
    readme = (ROOT / "README.md").read_text()
    assert "conda env create -f environment.yml && conda activate gptbook" in readme


def test_committed_notebooks_hold_no_local_path_or_timestamp():
    """tools/clean_notebook.py ran on every executed notebook: no machine's paths, execution times, bar frames."""
    local = re.compile(r"/(\.venv|site-packages)/|/[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+/gptbook/[a-z_]+\.py")
    local = re.compile(local.pattern + r"|/[A-Za-z0-9_./-]+/(the-verdict|shakespeare)\.txt")  # a data folder's path
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        text = nb.read_text(encoding="utf-8")
        assert not local.search(text), f"{nb.name}: {local.search(text)[0]}"
        assert '"execution": {' not in text, nb.name
        streams = [o["text"] for c in json.loads(text)["cells"] for o in c.get("outputs", []) if "text" in o]
        assert not any(re.search("\r[^\n]", "".join(t)) for t in streams), f"{nb.name}: overwritten bar frames"


def test_twins_keep_cell_tags_and_kernelspecs_agree():
    """Editing a .md twin and syncing must not drop hide-input / nbval tags; every chapter names one kernel."""
    kernels = set()
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        meta = json.loads(nb.read_text(encoding="utf-8"))["metadata"]
        kernels.add(json.dumps(meta["kernelspec"], sort_keys=True))
        assert "cell_metadata_filter" not in meta.get("jupytext", {}), nb.name
        assert "cell_metadata_filter" not in nb.with_suffix(".md").read_text(encoding="utf-8"), nb.name
    assert len(kernels) == 1, kernels


def test_exercise_answers_are_hidden_in_the_book_and_in_jupyter():
    """Below "## 练习": every code cell collapsed, input and output (the output gives the answer away), in Jupyter
    (jupyter.source_hidden / outputs_hidden) and in the book (tag hide-cell); nbval still runs them. Prose that
    discusses an answer sits in <details> (closed in both); outside it, only the questions and the link onward."""
    for nb in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        cells = json.loads(nb.read_text(encoding="utf-8"))["cells"]
        heads = [
            i
            for i, c in enumerate(cells)
            if c["cell_type"] == "markdown" and re.search("^## 练习", "".join(c["source"]), re.M)
        ]
        assert heads, f"{nb.name} has no exercises"
        start = heads[0]
        answers = [c for c in cells[start:] if c["cell_type"] == "code"]
        assert answers, nb.name
        for c in answers:
            assert "hide-cell" in c["metadata"].get("tags", []), f"{nb.name}: {''.join(c['source'])[:60]}"
            assert c["metadata"].get("jupyter") == {"source_hidden": True, "outputs_hidden": True}, nb.name
        prose = ["".join(c["source"]) for c in cells[start + 1 :] if c["cell_type"] == "markdown"]
        ends = [i for i, text in enumerate(prose) if re.search("^## ", text, re.M)]  # a section after the exercises
        if ends:
            prose = prose[: ends[0]] + [re.split("^## ", prose[ends[0]], flags=re.M)[0]]
        for i, text in enumerate(prose):
            shown = re.sub(r"<details><summary>[^<]+</summary>\n\n.*?\n\n</details>", "", text, flags=re.S).strip()
            if not shown:
                continue
            if i == len(prose) - 1:  # the way on: a rule, a sentence pointing to the next chapter, its link
                assert all(p == "---" or "下一" in p for p in shown.split("\n\n")), f"{nb.name}: {shown[:80]}"
            else:
                assert shown.startswith("**练习"), f"{nb.name}: answer prose outside <details>: {shown[:80]}"
