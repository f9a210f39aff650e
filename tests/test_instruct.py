"""Instruction data and batches: pairs from the plays, the template, padding and the loss mask, the chat model."""

import shutil

import pytest
import torch
import torch.nn.functional as F

import gptbook.instruct as instruct
from gptbook.checkpoint import load_checkpoint, param_digest
from gptbook.corpora import corpus
from gptbook.fused_loss import IGNORE_INDEX
from gptbook.instruct import (
    PLAYS,
    InstructConfig,
    Pair,
    Speech,
    collate,
    encode_prompt,
    encode_turn,
    finetune,
    make_pairs,
    play_pairs,
    response_loss,
    scenes,
    score,
    split_template,
)
from gptbook.model import GPT, GPTConfig
from gptbook.sampling import GREEDY, generate
from gptbook.tokenizer import EOT_ID, encode

PLAY = """ACT I.

SCENE 1. A room.

[Enter ANNA and BEN.]

ANNA.
Good morrow, sir.
How fare you?

BEN.
[Aside.] Well.

ANNA.
I am glad of it.

SCENE 2. Another room.

BEN.
Farewell.
"""


def tiny_gpt(seed=0):
    torch.manual_seed(seed)
    return GPT(GPTConfig(block_size=64, n_layer=1, n_head=2, n_embd=32)).eval()


def test_pairs_of_a_play_scene_by_scene():
    assert scenes(PLAY) == [
        [Speech("ANNA", "Good morrow, sir.", "How fare you?", 0), Speech("BEN", "Well.", "", 1),
         Speech("ANNA", "I am glad of it.", "", 2)],
        [Speech("BEN", "Farewell.", "", 3)],
    ]  # fmt: skip
    pairs = [p for p, _, _ in play_pairs("MACBETH", PLAY)]
    assert Pair("next_speaker", "Who speaks next?\nANNA.\nGood morrow, sir.\nBEN.\nWell.", "ANNA") in pairs
    assert Pair("continue", "Continue ANNA's speech:\nGood morrow, sir.", "How fare you?") in pairs
    assert Pair("which_play", "Which play is this from?\nBEN.\nFarewell.", "Macbeth") in pairs
    assert sorted(p.task for p in pairs) == ["continue", "next_speaker"] + ["which_play"] * 4  # no pair across scenes
    assert not [p for p, _, _ in play_pairs("HAMLET", PLAY) if p.task == "which_play"]  # not one of the four


def test_the_corpus_makes_three_tasks_split_by_play():
    split = make_pairs(corpus("shakespeare", download=False).read_text())
    for name, pairs in split.items():
        tasks = {p.task for p in pairs}
        assert tasks == {"next_speaker", "continue", "which_play"}, name
        assert all(len(encode_turn(p)[0]) <= 65 for p in pairs[::50])  # a window of 64 inputs and its targets
    assert {p.response for p in split["test"] if p.task == "which_play"} == set(PLAYS.values())
    assert 0.05 < len(split["test"]) / (len(split["train"]) + len(split["test"])) < 0.15


def test_the_template_and_the_loss_mask():
    assert split_template(instruct.TEMPLATE) == ("### Instruction:\n", "\n\n### Response:\n")
    with pytest.raises(ValueError, match="once"):
        split_template("no slot")
    a, b = Pair("t", "Who speaks next?", "ANNA"), Pair("t", "Continue BEN's speech:\nWell.", "Farewell, sweet.")
    ids, labels = encode_turn(a)
    n = len(encode_prompt(a.instruction))
    assert ids == encode_prompt(a.instruction) + encode("ANNA") + [EOT_ID]
    assert labels == [IGNORE_INDEX] * n + encode("ANNA") + [EOT_ID]
    x, y = collate([encode_turn(a), encode_turn(b)])
    long = len(encode_turn(b)[0])
    assert x.shape == y.shape == (2, long - 1) and long > len(ids)
    assert x[0, : len(ids) - 1].tolist() == ids[:-1] and (x[0, len(ids) - 1 :] == EOT_ID).all()  # right padding
    assert y[0].tolist() == labels[1:] + [IGNORE_INDEX] * (long - len(ids))  # y[t]: the label of token t + 1
    assert (y != IGNORE_INDEX).sum(1).tolist() == [len(encode(p.response)) + 1 for p in (a, b)]


def test_response_loss_is_cross_entropy_with_ignore_index():
    model = tiny_gpt()
    x, y = collate([encode_turn(Pair("t", "Who speaks next?", "ANNA")), encode_turn(Pair("t", "Hi", "BEN, sir"))])
    logits, _ = model(x)  # (B, T, vocab): every row
    full = F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1), ignore_index=IGNORE_INDEX)
    torch.testing.assert_close(response_loss(model, x, y), full)


def test_exact_means_greedy_decoding_writes_the_answer():
    model, pairs = tiny_gpt(), [Pair("t", "Who speaks next?", "ANNA"), Pair("t", "Which play?", "Macbeth")]
    losses = finetune(model, pairs, InstructConfig(lora_rank=0, steps=40, batch_size=2, lr=1e-2, warmup_iters=0))
    assert losses[-1] < losses[0] / 10
    others = [Pair("t", "Who speaks next?", "BEN"), Pair("t", "Which play?", "Othello")]
    for p in pairs + others:
        ids = torch.tensor([encode_prompt(p.instruction)])
        written = generate(model, ids, 5, GREEDY, stop_at_eot=True)[0, ids.size(1) :].tolist()
        assert score(model, [p])["exact"] == float(written == encode(p.response) + [EOT_ID])
    assert score(model, pairs)["exact"] == 1.0 and score(model, others)["exact"] == 0.0


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    shutil.copy(corpus("shakespeare", download=False), tmp_path / "shakespeare.txt")
    monkeypatch.setenv("GPTBOOK_DATA", str(tmp_path))
    return tmp_path


def test_instructed_makes_the_chat_model_once_then_loads_it(data_dir, monkeypatch):
    base = {"seed": 0}
    monkeypatch.setattr(instruct, "pretrained", lambda log: (tiny_gpt(base["seed"]), []))
    cfg, lines = InstructConfig(steps=2, batch_size=2), []
    model, history = instruct.instructed(log=lines.append, cfg=cfg)
    assert len(history) == 2 and not model.training and str(instruct.chat_path()).startswith(str(data_dir))
    ckpt = load_checkpoint(instruct.chat_path())  # weights_only=True
    assert ckpt["chat"] == {"template": instruct.TEMPLATE} and ckpt["config"]["lora_rank"] == 8
    assert ckpt["model"].keys() == tiny_gpt().state_dict().keys()  # merged: a plain GPT's weights
    again, _ = instruct.instructed(log=lines.append, cfg=cfg)
    assert param_digest(again) == param_digest(model)
    base["seed"] = 1  # another base model: made again
    other, _ = instruct.instructed(log=lines.append, cfg=cfg)
    assert param_digest(other) != param_digest(model)
    assert load_checkpoint(instruct.chat_path())["config"]["base"] == param_digest(tiny_gpt(1))
