"""The character-level baseline (chapter 06): its tokenizer, its split, its runs through train, resume and generate."""

import pytest
import torch

import gptbook.pretrain as pretrain
from gptbook.checkpoint import check_checkpoint, load_checkpoint
from gptbook.cli import generate_main, train_main
from gptbook.data import load_char_splits, load_splits
from gptbook.tokenizer import CharTokenizer, decode

TINY = dict(n_layer=1, n_head=2, n_embd=32, block_size=16, batch_size=2, max_iters=2, eval_interval=1, eval_iters=1)


def test_char_tokenizer_round_trips_and_names_unknown_characters():
    tok = CharTokenizer.of("hello, world")
    assert tok.chars == " ,dehlorw" and tok.decode(tok.encode("world, hello")) == "world, hello"
    assert tok.encode("he") == [tok.chars.index("h"), tok.chars.index("e")]
    with pytest.raises(ValueError, match="'!z'"):
        tok.encode("hello z!")


def test_char_splits_hold_the_same_text_as_the_bpe_splits(verdict_path):
    bpe = load_splits(verdict_path, 16)
    chars, tok = load_char_splits(verdict_path, 16)
    for name in ("train", "val"):
        assert tok.decode(chars[name]) == decode(bpe[name])
    assert len(tok.chars) == int(torch.cat([chars["train"], chars["val"]]).max()) + 1 < 100


def test_char_run_trains_resumes_and_generates(tmp_path, capsys, verdict_path):
    flags = [f"--data={verdict_path}", "--tokenizer=char", f"--out_dir={tmp_path}", "--max_iters=2",
             "--eval_interval=1", "--eval_iters=1", "--block_size=16", "--batch_size=2", "--n_layer=1", "--n_embd=32",
             "--n_head=2", "--prompt=I had", "--max_new_tokens=5"]  # fmt: skip
    assert train_main(flags) == 0
    ckpt = load_checkpoint(tmp_path / "ckpt.pt")
    assert ckpt["vocab"] == CharTokenizer.of(verdict_path.read_text()).chars
    assert ckpt["model_config"]["vocab_size"] == len(ckpt["vocab"])
    assert train_main([f"--out_dir={tmp_path}", "--resume", "--max_iters=3", "--max_new_tokens=0"]) == 0
    capsys.readouterr()
    assert generate_main([f"--ckpt={tmp_path / 'ckpt.pt'}", "--prompt=I had", "--max_new_tokens=7"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("I had") and len(out.rstrip("\n")) == len("I had") + 7
    assert generate_main([f"--ckpt={tmp_path / 'ckpt.pt'}", "--prompt=I had €"]) == 2
    assert capsys.readouterr().err == "error: --prompt has characters not in the vocabulary: '€'\n"


def test_a_vocabulary_that_disagrees_with_the_model_is_refused(tmp_path, verdict_path):
    flags = [f"--data={verdict_path}", "--tokenizer=char", f"--out_dir={tmp_path}", "--max_iters=1", "--block_size=16",
             "--n_layer=1", "--n_embd=32", "--n_head=2", "--max_new_tokens=0"]  # fmt: skip
    assert train_main(flags) == 0
    ckpt = load_checkpoint(tmp_path / "ckpt.pt")
    ckpt["vocab"] = ckpt["vocab"][:-1]
    with pytest.raises(ValueError, match="vocab does not match"):
        check_checkpoint(ckpt, "x")


def test_the_char_recipe_trains_once_then_loads_and_its_samples_are_characters(tmp_path, monkeypatch):
    import shutil

    from gptbook.corpora import corpus

    shutil.copy(corpus("shakespeare", download=False), tmp_path / "shakespeare.txt")
    monkeypatch.setenv("GPTBOOK_DATA", str(tmp_path))
    lines = []
    model, history = pretrain.pretrained("shakespeare-char", log=lines.append, **TINY)
    assert model.config.vocab_size == 84 and pretrain.run_dir("shakespeare-char").parent == tmp_path / "checkpoints"
    last = history[-1]["sample"]
    assert last.startswith(pretrain.PROMPT) and len(last) == len(pretrain.PROMPT) + pretrain.SAMPLE_CHARS
    pretrain.pretrained("shakespeare-char", log=lines.append, **TINY)
    assert len([x for x in lines if x.startswith("done:")]) == 1  # loaded the second time
    cfg = pretrain.recipe("shakespeare-char")
    assert (cfg.tokenizer, cfg.n_layer, cfg.n_embd) == (
        "char",
        pretrain.SHAKESPEARE.n_layer,
        pretrain.SHAKESPEARE.n_embd,
    )
