"""The repository URL is set in one place, _config.yml; every link and install line is derived from it at build time
(_ext/book_repository.py), and while it is empty the book shows none of them rather than a made-up address."""

import importlib.util
import re
import tomllib
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parent.parent
# What a book, README or package metadata would say to point at a repository or an online copy of it.
REPO_LINK = re.compile(r"git\+https?://|github\.com/gptbook|mybinder\.org/v2/|colab\.research\.google\.com/github/")


def configured_url():
    """repository.url in _config.yml, read without PyYAML (no test dependency)."""
    m = re.search(r"^repository:\n(?:[ \t].*\n)*?[ \t]+url:[ \t]*(.*)$", (ROOT / "_config.yml").read_text(), re.M)
    assert m, "_config.yml: no repository.url"
    return m.group(1).split(" #")[0].strip().strip("\"'").rstrip("/")


def sources():
    """The book's sources and the files that tell a reader how to get the code."""
    names = ["intro.md", "_toc.yml", "README.md", "CONTRIBUTING.md", "pyproject.toml", "environment.yml", "Makefile"]
    files = [ROOT / n for n in names] + sorted(ROOT.glob("*.md")) + sorted((ROOT / "notebooks").glob("*.*"))
    return sorted({f for f in files if f.is_file() and f.suffix in (".md", ".ipynb", ".yml", ".toml", "")})


def load_extension():
    spec = importlib.util.spec_from_file_location("book_repository", ROOT / "_ext" / "book_repository.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_no_repository_url_outside_config():
    url = configured_url()
    for path in sources():
        text = path.read_text(encoding="utf-8")
        found = REPO_LINK.findall(text) + ([url] if url and url in text else [])
        assert not found, f"{path.name}: {found}: derive it from repository.url in _config.yml"


def test_intro_shows_repository_lines_only_when_configured():
    """Substitutions that carry the URL appear only inside ```{only} repository``` blocks (left out when unset)."""
    for path in [ROOT / "intro.md", *sorted(ROOT.glob("*.md"))]:
        text = path.read_text(encoding="utf-8")
        outside = re.sub(r"^```\{only\} repository\n.*?^```$", "", text, flags=re.M | re.S)
        assert "{{" not in outside, f"{path.name}: a substitution outside an `only repository` block"


def test_config_derives_buttons_from_the_url():
    config = (ROOT / "_config.yml").read_text()
    assert "use_repository_button" not in config and "use_issues_button" not in config  # the extension sets them
    assert re.search(r"^  local_extensions:\n    book_repository: _ext/$", config, re.M)
    assert re.search(r"extensions: \[[^\]]*\bbook_repository\]", config)


@pytest.mark.parametrize("url", ["", "https://github.com/someone/gptbook/"])
def test_extension(url):
    ext = load_extension()
    tags = set()
    app = SimpleNamespace(tags=SimpleNamespace(add=tags.add))
    launch = {"binderhub_url": "https://mybinder.org", "colab_url": "https://colab.research.google.com"}
    options = {"repository_url": url, "launch_buttons": launch}
    config = SimpleNamespace(html_theme_options=options, myst_substitutions={"other": "x"})
    ext.configure(app, config)
    opts, subs = config.html_theme_options, config.myst_substitutions
    assert subs["other"] == "x"
    if not url:
        assert not tags and not opts["use_repository_button"] and not opts["use_issues_button"]
        assert not opts["launch_buttons"]
        assert all(subs[k] == "" for k in ext.links(""))
    else:
        base = url.rstrip("/")
        assert tags == {"repository"} and opts["use_repository_button"] and opts["use_issues_button"]
        assert opts["repository_url"] == base and subs["pip_install_from_repository"] == f"`%pip install git+{base}`"
        assert subs["git_clone"] == f"`git clone {base}`" and opts["launch_buttons"] == launch


def test_package_urls_follow_the_config():
    urls = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"].get("urls", {})
    url = configured_url()
    assert all(url and u.startswith(url) for u in urls.values()), f"project.urls {urls} but repository.url {url!r}"
