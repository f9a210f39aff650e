"""Fail when a notebook and its MyST twin (jupytext pairing) are out of sync, or one of the pair is missing."""

import subprocess
import sys
from pathlib import Path

FILTER = "-jupytext.text_representation.jupytext_version"


def main() -> int:
    nb_dir = Path(__file__).resolve().parent.parent / "notebooks"
    notebooks = sorted(nb_dir.glob("[0-9][0-9]_*.ipynb"))
    twins = sorted(nb_dir.glob("[0-9][0-9]_*.md"))
    bad = [f"{md.name} has no .ipynb twin" for md in twins if not md.with_suffix(".ipynb").exists()]
    for nb in notebooks:
        md = nb.with_suffix(".md")
        if not md.exists():
            bad.append(f"{nb.name} has no MyST twin {md.name}")
            continue
        cmd = [
            sys.executable,
            "-m",
            "jupytext",
            "--to",
            "md:myst",
            "--opt",
            f"notebook_metadata_filter={FILTER}",
            "-o",
            "-",
            str(nb),
        ]
        text = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        if text != md.read_text(encoding="utf-8"):
            bad.append(f"{nb.name} and {md.name} differ: run `jupytext --sync {nb}`")
    for line in bad:
        print(line, file=sys.stderr)
    print(f"pairing: {len(notebooks)} notebooks checked, {len(bad)} problems")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
