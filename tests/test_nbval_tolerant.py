"""The notebook check (tools/nbval_tolerant.py) passes what another CPU changes and fails what changes meaning."""

import base64
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
from nbval_tolerant import Tolerance, compare_png, compare_text  # noqa: E402

TOL = Tolerance()


@pytest.mark.parametrize(
    "ref, test",
    [
        ("loss 5.8712\n", "loss 5.8711\n"),  # last digit
        ("val 6.13, train 4.21\n", "val 6.15, train 4.20\n"),  # within rtol
        ("|diff| 5.6e-04\n", "|diff| 7.3e-04\n"),  # within atol
        ("p = 0.929\n", "p = 0.931\n"),
        ("L0 H1    9.99 |\n", "L0 H1   10.04 |\n"),  # alignment spaces around a number that grew a digit
        ("-0.000\n", "+0.000\n"),
    ],
)
def test_numbers_within_tolerance_pass(ref, test):
    assert compare_text(ref, test, TOL) is None


@pytest.mark.parametrize(
    "ref, test, says",
    [
        ("loss 5.871\n", "loss 5.990\n", "number 5.990 where 5.871"),
        ("shape (2, 8, 64)\n", "shape (2, 8, 65)\n", "integer 65 where 64"),
        ("ids [40, 367, 2885]\n", "ids [40, 368, 2885]\n", "integer 368"),
        ("nucleus of 1055 tokens\n", "nucleus of 1054 tokens\n", "integer 1054"),
        ("' he' -> ' she' 0.82\n", "' he' -> ' they' 0.82\n", "expected"),
        ("ValueError: bad\n", "KeyError: bad\n", "expected"),
        ("1 2 3\n", "1 2\n", "expected"),
        ("val nan\n", "val 6.0\n", "expected"),
    ],
)
def test_changes_beyond_tolerance_fail(ref, test, says):
    problem = compare_text(ref, test, TOL)
    assert problem is not None and says in problem, problem


def test_a_cell_can_let_counts_move():
    wide = Tolerance(rtol=0.05, ints=True)
    assert compare_text("nucleus of 1055 tokens", "nucleus of 1054 tokens", wide) is None
    assert compare_text("nucleus of 1055 tokens", "nucleus of 900 tokens", wide) is not None
    with pytest.raises(ValueError, match="unknown tolerance keys"):
        Tolerance.of_cell({"tolerance": {"rtl": 0.1}})


def _png(draw, size=(5, 3)) -> str:
    fig, ax = plt.subplots(figsize=size, dpi=80)
    draw(ax)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


x = np.linspace(0, 6, 200)


def two_curves(ax, eps=0.0):
    ax.plot(x, np.sin(x) + eps * np.cos(3 * x), label="sin")
    ax.plot(x, np.exp(-x / 3), label="decay")
    ax.set_ylim(-1.1, 1.1)
    ax.legend()


def test_figure_that_moved_a_little_passes():
    assert compare_png(_png(two_curves), _png(lambda ax: two_curves(ax, eps=0.01)), TOL) is None


def test_heatmap_colours_that_moved_a_little_pass_but_another_heatmap_fails():
    a = np.random.default_rng(0).random((8, 8))
    ref = _png(lambda ax: ax.imshow(a, vmin=0, vmax=1))
    assert compare_png(ref, _png(lambda ax: ax.imshow(a + 0.02, vmin=0, vmax=1)), TOL) is None
    problem = compare_png(ref, _png(lambda ax: ax.imshow(a.T, vmin=0, vmax=1)), TOL)
    assert problem is not None and "colours" in problem


@pytest.mark.parametrize(
    "changed",
    [
        lambda ax: (ax.plot(x, np.sin(x), label="sin"), ax.set_ylim(-1.1, 1.1), ax.legend()),  # a curve missing
        lambda ax: (two_curves(ax), ax.plot(x, np.cos(x))),  # an extra curve
        lambda ax: (ax.plot(x, np.sin(2 * x)), ax.plot(x, np.exp(-x / 3)), ax.set_ylim(-1.1, 1.1)),  # another
        lambda ax: ax.set_ylim(-1.1, 1.1),  # empty axes
    ],
)
def test_figure_that_changed_meaning_fails(changed):
    problem = compare_png(_png(two_curves), _png(changed), TOL)
    assert problem is not None and "drawn pixels" in problem


def test_figure_of_another_size_fails():
    assert "px where" in compare_png(_png(two_curves), _png(two_curves, size=(5, 4)), TOL)


def test_a_cell_can_let_the_size_move_a_few_pixels():
    wider = _png(two_curves, size=(5.05, 3))  # 404 px where 400
    assert "px where" in compare_png(_png(two_curves), wider, TOL)
    assert compare_png(_png(two_curves), wider, Tolerance(png_px=4, png_ink=2000, png_rms=60)) is None
    assert "px where" in compare_png(_png(two_curves), wider, Tolerance(png_px=3, png_ink=2000, png_rms=60))
    assert "drawn pixels" in compare_png(_png(two_curves), _png(lambda ax: ax.set_ylim(-1.1, 1.1)), Tolerance(png_px=4))


# End to end: a real chapter with some committed outputs altered, checked the way `make notebooks` checks.
CHAPTER = ROOT / "notebooks" / "05_block.ipynb"


def _code_cells(nb):
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def _cells_with(nb, pred):
    return [i for i, c in enumerate(_code_cells(nb)) if any(pred(o) for o in c.get("outputs", []))]


def _stream_with(pattern):
    return lambda o: o["output_type"] == "stream" and re.search(pattern, "".join(o["text"]))


def _alter_stream(cell, pattern, repl):
    for o in cell["outputs"]:
        if o["output_type"] == "stream" and re.search(pattern, "".join(o["text"])):
            o["text"] = re.sub(pattern, repl, "".join(o["text"]), count=1)
            return


def _blank_lower_half(cell):
    for o in cell["outputs"]:
        if "image/png" in o.get("data", {}):
            img = plt.imread(io.BytesIO(base64.b64decode(o["data"]["image/png"])), format="png")
            img[img.shape[0] // 2 :] = 1.0
            buf = io.BytesIO()
            plt.imsave(buf, img, format="png")
            o["data"]["image/png"] = base64.b64encode(buf.getvalue()).decode()
            return


@pytest.mark.skipif(not CHAPTER.exists(), reason="needs the notebooks of a checkout")
def test_tampered_outputs_are_caught(tmp_path):
    nb = json.loads(CHAPTER.read_text(encoding="utf-8"))
    num, within = _cells_with(nb, _stream_with(r"\d\.\d{3}"))[:2]
    word = next(i for i in _cells_with(nb, _stream_with(r"[A-Za-z]{4,}")) if i not in (num, within))
    fig = next(i for i in _cells_with(nb, lambda o: "image/png" in o.get("data", {})) if i not in (num, within, word))
    cells = _code_cells(nb)
    _alter_stream(cells[within], r"(\d\.\d\d)(\d)", lambda m: m[1] + str((int(m[2]) + 1) % 10))  # within tolerance
    _alter_stream(cells[num], r"\d\.\d{3}", lambda m: f"{float(m[0]) * 1.5 + 1:.3f}")
    _alter_stream(cells[word], r"[A-Za-z]{4,}", "Xyzzy")
    _blank_lower_half(cells[fig])
    assert nb != json.loads(CHAPTER.read_text(encoding="utf-8"))
    (tmp_path / "nb").mkdir()
    (tmp_path / "nb" / "altered.ipynb").write_text(json.dumps(nb), encoding="utf-8")
    shutil.copy(ROOT / "the-verdict.txt", tmp_path / "the-verdict.txt")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tools")}
    cmd = [sys.executable, "-m", "pytest", "-p", "nbval_tolerant", "--nbval", "--nbval-current-env", "-q", "-rf"]
    cmd += ["--nbval-sanitize-with", str(ROOT / "notebooks" / "sanitize.cfg"), "-p", "no:cacheprovider", "nb"]
    out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600).stdout
    failed = re.findall(r"^FAILED \S*altered\.ipynb::Cell (\d+)", out, re.MULTILINE)
    assert sorted(map(int, failed)) == sorted([num, word, fig]), out[-3000:]
    assert "drawn pixels" in out and "Xyzzy" in out and f"{len(cells) - 3} passed" in out, out[-3000:]


def test_a_cell_can_let_quoted_picks_move():
    ref, test = "layer 1 head 0: ' he' -> ' she' 0.82\n", "layer 1 head 0: ' he' -> \"'s\" 0.80\n"
    assert compare_text(ref, test, Tolerance(quoted=True)) is None
    assert compare_text(ref, test, TOL) is not None
    assert compare_text(ref, "layer 1 head 1: ' he' -> ' she' 0.82\n", Tolerance(quoted=True)) is not None
