"""The Shakespeare recipe: its flags are the recipe, pretrained() trains once then loads, the command samples."""

import dataclasses
import shutil

import pytest

import gptbook.pretrain as pretrain
from gptbook.checkpoint import param_digest
from gptbook.cli import config_from_args, train_parser
from gptbook.train import TrainConfig

# the recipe shrunk to a few seconds: the same code path, a tiny model
TINY = dict(n_layer=1, n_head=2, n_embd=32, block_size=16, batch_size=2, max_iters=2, eval_interval=1, eval_iters=1)


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    """A data folder holding the corpus (sha256-checked when found), as `python -m gptbook.corpora` leaves it."""
    from gptbook.corpora import corpus

    shutil.copy(corpus("shakespeare", download=False), tmp_path / "shakespeare.txt")
    monkeypatch.setenv("GPTBOOK_DATA", str(tmp_path))
    return tmp_path


def test_the_command_line_flags_are_the_recipe():
    cfg = pretrain.recipe()
    passed = {k: v for k, v in vars(train_parser().parse_args(pretrain.flags(cfg))).items() if k in cfg.__dict__}
    assert config_from_args(passed)[0] == cfg
    assert cfg.data == "shakespeare" and cfg.chunked_loss and cfg.out_dir == str(pretrain.run_dir())
    assert "--chunked_loss" in pretrain.flags(cfg)
    assert "--no-bias" in pretrain.flags(dataclasses.replace(cfg, bias=False))
    assert pretrain.flags(TrainConfig()) == []


def test_pretrained_trains_once_then_loads(data_dir):
    lines = []
    model, history = pretrain.pretrained(log=lines.append, **TINY)
    assert (pretrain.run_dir() / "ckpt.pt").is_file() and str(pretrain.run_dir()).startswith(str(data_dir))
    assert [h["sample"] for h in history if h["val_loss"] is not None][-1] == pretrain.sample(model)
    assert not model.training
    again, history2 = pretrain.pretrained(log=lines.append, **TINY)  # complete: loaded, not trained
    assert history2 == history and len([x for x in lines if x.startswith("done:")]) == 1
    assert param_digest(again) == param_digest(model)
    pretrain.pretrained(log=lines.append, **{**TINY, "max_iters": 3})  # another recipe: trained again
    assert len([x for x in lines if x.startswith("done:")]) == 2
    # the same recipe run from the command line without samples: chapter 06 needs them, so it is made again
    assert pretrain.main([*(f"--{k}={v}" for k, v in {**TINY, "max_iters": 3}.items()), "--max_new_tokens=0"]) == 0
    _, history3 = pretrain.pretrained(log=lines.append, **{**TINY, "max_iters": 3})
    assert len([x for x in lines if x.startswith("done:")]) == 3 and "sample" in history3[-1]


def test_the_command_prints_samples_of_the_speaker(data_dir, capsys):
    argv = [f"--{k}={v}" for k, v in TINY.items()]
    assert pretrain.main(argv) == 0
    out = capsys.readouterr().out
    assert out.count("--- sample at step") == 3 and f"--- sample at step 2 ---\n{pretrain.PROMPT}" in out
    assert (pretrain.run_dir() / "history.json").is_file()


def test_a_checkpoint_older_than_a_new_config_field_is_still_the_recipe(data_dir):
    """A field added to TrainConfig later (tokenizer) is absent from older checkpoints: its default, not a retrain."""
    from gptbook.checkpoint import load_checkpoint, save_checkpoint

    lines = []
    pretrain.pretrained(log=lines.append, **TINY)
    path = pretrain.run_dir() / "ckpt.pt"
    ckpt = load_checkpoint(path)
    del ckpt["config"]["tokenizer"]
    save_checkpoint(path, ckpt)
    pretrain.pretrained(log=lines.append, **TINY)
    assert len([x for x in lines if x.startswith("done:")]) == 1  # loaded, not trained again
    ckpt["config"]["n_embd"] = 64  # a field that is there and differs: trained again
    save_checkpoint(path, ckpt)
    pretrain.pretrained(log=lines.append, **TINY)
    assert len([x for x in lines if x.startswith("done:")]) == 2
