"""The troubleshooting appendix: in the table of contents; every flag and function it tells a reader to use exists."""

import dataclasses
import re
from pathlib import Path

from gptbook.train import TrainConfig

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "troubleshooting.md"


def test_appendix_is_in_the_toc():
    assert re.search(r"^      - file: troubleshooting$", (ROOT / "_toc.yml").read_text(), re.M)
    assert "](troubleshooting.md)" in (ROOT / "intro.md").read_text()


def test_flags_and_names_exist():
    text = PAGE.read_text(encoding="utf-8")
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    flags = set(re.findall(r"`--(\w+)", text))
    assert flags and flags <= fields, sorted(flags - fields)
    for m in re.finditer(r"`TrainConfig\(\.\.\.\)` 时传 `(\w+)=", text):
        assert m.group(1) in fields
    from gptbook.tokenizer import get_tokenizer

    assert "from gptbook.tokenizer import get_tokenizer" in text and get_tokenizer().n_vocab == 50257
    for topic in ("MPS", "Windows", "torch.compile", "tiktoken", "OOM"):
        assert topic in text, topic
