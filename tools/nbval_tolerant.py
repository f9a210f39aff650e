"""nbval, but portable: numbers compared with a tolerance, figures compared as images with a threshold.

Load it with `pytest -p nbval_tolerant --nbval ...` (tools/ on the path; `make notebooks` does this). It replaces
nbval's byte-for-byte comparison of a cell's outputs with `compare_outputs` below:

- text (stdout, stderr, text/plain, text/html, ...): the words, spaces aside, must be equal; numbers are compared
  with a tolerance. Integers (token ids, shapes, counts) must be equal; a number with a decimal point or an
  exponent may differ by `rtol * |x| + atol`, plus one unit in its last printed digit (a value that sits on a
  rounding boundary prints either way);
- errors (name and value): as text, so the same rules;
- figures (image/png): decoded and compared pixel by pixel. The images must have the same size (within `png_px`
  pixels each way; the smaller is then padded with white on the right and bottom), and the root-mean-square
  difference of their RGB values (0-255) must stay within `png_rms`. A missing or extra figure, another curve, or an
  empty axes is far beyond that.

The defaults come from measuring how far outputs move between two CPUs (notebooks executed on an AVX2-only machine,
re-run on an AVX-512 one; `make notebooks-perturbed` reproduces the first here): numbers that no training produced
moved by at most 3e-4 relative, losses of short training runs by up to 0.8% (chapter 04's 150 steps at lr 1e-2), a
difference of two such losses by 0.003, top-p token counts by one or two; line plots moved by under 1 px (ink 0)
with colours within RMS 3.2, a heatmap of a trained model's attention by RMS 9-11. Hence rtol 1% and atol 0.005
(about 3x the largest non-training move), png_ink 200 px (a short label; a missing curve is more), png_rms 8.
Chaotic runs (hundreds of steps at a high learning rate; a checkpoint trained anew on each machine) cannot be
held to these.
A cell may widen them in its metadata, saying why in a comment in the cell:

    ---
    tolerance: {rtol: 0.05, ints: true}
    ---

`png_px: 8` lets a figure's size move by 8 px: the inline backend crops each figure to what it draws, so the tick
labels of an axis whose range another machine sets (seconds of training) make it wider or narrower. `ints: true` lets
integers move by the same tolerance (e.g. a count of tokens kept by top-p); `quoted: true` lets quoted strings ('...'
or "...") differ: what a trained model picked (a head's favourite token, nearest neighbours), which another CPU's
training run can pick differently. The cell then asserts what holds on any machine.
"""

import base64
import io
import math
import re
from dataclasses import dataclass, fields

import numpy as np
from matplotlib import image as mpimg
from nbval.plugin import IPyNbCell, transform_streams_for_comparison

IMAGES = ("image/png",)
NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")
QUOTED = re.compile(r"'[^'\n]*'|\"[^\"\n]*\"")


@dataclass(frozen=True)
class Tolerance:
    rtol: float = 1e-2
    atol: float = 5e-3
    ints: bool = False
    png_ink: int = 200
    quoted: bool = False
    png_rms: float = 8.0
    png_px: int = 0

    @classmethod
    def of_cell(cls, metadata) -> "Tolerance":
        given = dict(metadata.get("tolerance", {}))
        unknown = set(given) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown tolerance keys {sorted(unknown)} in cell metadata")
        return cls(**given)


def _is_int(s: str) -> bool:
    return not any(c in s for c in ".eE")


def _last_digit(s: str) -> float:
    """One unit in the last printed digit: '5.871' -> 0.001, '12' -> 1."""
    mantissa, _, exp = s.lower().partition("e")
    decimals = len(mantissa.partition(".")[2])
    return 10.0 ** (-decimals + (int(exp) if exp else 0))


def _numbers_close(a: str, b: str, tol: Tolerance) -> bool:
    x, y = float(a), float(b)
    if _is_int(a) and _is_int(b) and not tol.ints:
        return x == y
    if not (math.isfinite(x) and math.isfinite(y)):
        return x == y
    allowed = tol.atol + tol.rtol * max(abs(x), abs(y)) + max(_last_digit(a), _last_digit(b))
    return abs(x - y) <= allowed


def _context(s: str, start: int, end: int) -> str:
    return repr(s[max(0, start - 40) : end + 40])


def compare_text(ref: str, test: str, tol: Tolerance) -> str | None:
    """None when `test` matches `ref` within `tol`, else one line saying where they differ."""
    if tol.quoted:
        ref, test = QUOTED.sub("'...'", ref), QUOTED.sub("'...'", test)
    ref_nums, test_nums = list(NUMBER.finditer(ref)), list(NUMBER.finditer(test))
    ref_words, test_words = NUMBER.split(ref), NUMBER.split(test)
    for i, (r, t) in enumerate(zip(ref_words, test_words, strict=False)):
        if re.sub(r"[ \t]+", " ", r) != re.sub(r"[ \t]+", " ", t):
            where = ref_nums[i - 1].end() if i else 0
            return f"text differs near {_context(ref, where, where)}: expected {r!r}, got {t!r}"
    if len(ref_nums) != len(test_nums):
        return f"{len(test_nums)} numbers where {len(ref_nums)} were expected"
    for r, t in zip(ref_nums, test_nums, strict=True):
        if not _numbers_close(r.group(), t.group(), tol):
            kind = "integer" if _is_int(r.group()) and not tol.ints else "number"
            return (
                f"{kind} {t.group()} where {r.group()} was expected "
                f"(rtol={tol.rtol}, atol={tol.atol}) in {_context(ref, r.start(), r.end())}"
            )
    return None


def _decode_png(b64: str) -> np.ndarray:
    return mpimg.imread(io.BytesIO(base64.b64decode(b64)), format="png")[..., :3] * 255.0  # (H, W, 3)


def _dilate(mask: np.ndarray, r: int) -> np.ndarray:
    """True within r pixels (a square) of a True pixel of mask (H, W)."""
    h, w = mask.shape
    padded = np.pad(mask, r)
    out = np.zeros_like(mask)
    for dy in range(2 * r + 1):
        for dx in range(2 * r + 1):
            out |= padded[dy : dy + h, dx : dx + w]
    return out


def figure_difference(ref: np.ndarray, test: np.ndarray, reach: int = 3) -> tuple[int, float]:
    """(ink, rms) of two same-sized RGB images (H, W, 3), values 0-255.

    ink: how many drawn (non-white) pixels of either image have no drawn pixel of the other within `reach`
    pixels: a curve that moved a little counts nothing; a missing or extra curve, label or axes counts all of it.
    rms: root-mean-square difference of the RGB values: colours that changed (a heatmap's cells).
    """
    ink_ref, ink_test = ref.min(-1) < 200, test.min(-1) < 200
    lost = ink_ref & ~_dilate(ink_test, reach)
    new = ink_test & ~_dilate(ink_ref, reach)
    return int(lost.sum() + new.sum()), float(np.sqrt(np.mean((ref - test) ** 2)))


def _pad_white(img: np.ndarray, other: tuple[int, ...]) -> np.ndarray:
    """img (H, W, 3) padded with white on the right and bottom to at least the height and width of `other`."""
    dh, dw = max(0, other[0] - img.shape[0]), max(0, other[1] - img.shape[1])
    return np.pad(img, ((0, dh), (0, dw), (0, 0)), constant_values=255.0)


def compare_png(ref_b64: str, test_b64: str, tol: Tolerance) -> str | None:
    ref, test = _decode_png(ref_b64), _decode_png(test_b64)
    if all(abs(a - b) <= tol.png_px for a, b in zip(ref.shape, test.shape, strict=True)):
        ref, test = _pad_white(ref, test.shape), _pad_white(test, ref.shape)
    if ref.shape != test.shape:
        return f"figure is {test.shape[1]}x{test.shape[0]} px where {ref.shape[1]}x{ref.shape[0]} was expected"
    ink, rms = figure_difference(ref, test)
    if ink > tol.png_ink:
        return f"figure differs: {ink} drawn pixels have no counterpart in the expected figure (png_ink={tol.png_ink})"
    if rms > tol.png_rms:
        return f"figure differs: its colours are RMS {rms:.1f} of 255 away (png_rms={tol.png_rms})"
    return None


def _flatten(item, outputs, skip) -> dict[str, list]:
    """nbval's view of a cell's outputs: {'stdout': [...], 'text/plain': [...], 'image/png': [...], ...}."""
    flat: dict[str, list] = {}
    for out in transform_streams_for_comparison(outputs):
        for key, value in out.items():
            if key in skip:
                continue
            pairs = value.items() if key == "data" else [(key, value)]
            for k, v in pairs:
                if k not in skip:
                    flat.setdefault(k, []).append(v if k in IMAGES else item.sanitize(v))
    return flat


def compare_outputs(self, test, ref, skip_compare=None):
    """IPyNbCell.compare_outputs with the rules of this module's docstring."""
    tol = Tolerance.of_cell(self.cell.metadata)
    skip = set(skip_compare or self.parent.skip_compare) - set(IMAGES)
    want, got = _flatten(self, ref, skip), _flatten(self, test, skip)
    self.comparison_traceback = []
    problem = None
    if set(want) != set(got):
        problem = f"output kinds {sorted(got)} where {sorted(want)} were expected"
    for key in sorted(want):
        if problem:
            break
        if len(want[key]) != len(got[key]):
            problem = f"{len(got[key])} outputs of kind {key!r} where {len(want[key])} were expected"
            break
        for r, t in zip(want[key], got[key], strict=True):
            r, t = ("".join(v) if isinstance(v, list) else v for v in (r, t))
            problem = (compare_png if key in IMAGES else compare_text)(r, t, tol)
            if problem:
                problem = f"{key}: {problem}"
                break
    if problem:
        self.comparison_traceback.append(problem)
        return False
    return True


def pytest_configure(config):
    IPyNbCell.compare_outputs = compare_outputs
