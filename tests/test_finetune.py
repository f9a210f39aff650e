"""Chapter 10's pieces: the corpus cut into works, the split by play, passages, the classifier head, freezing."""

import copy

import pytest
import torch

from gptbook.corpora import corpus
from gptbook.finetune import (
    BYLINE,
    CLASSES,
    GENRES,
    ClassifierGPT,
    FinetuneConfig,
    accuracy,
    confusion,
    finetune,
    freeze,
    held_out,
    labelled,
    num_trainable,
    passages,
    predict,
    works,
)
from gptbook.model import GPT, GPTConfig

TINY = GPTConfig(vocab_size=100, block_size=16, n_layer=2, n_head=2, n_embd=16)


@pytest.fixture(scope="module")
def text():
    return corpus("shakespeare", download=False).read_text()


@pytest.fixture
def tiny():
    return ClassifierGPT(GPT(TINY), 3, seed=0).eval()


def test_works_cut_the_corpus_at_its_42_bylines(text):
    found = works(text)
    assert [t for t, _ in found] == list(GENRES) and len(found) == 42 == text.count(BYLINE + "\n")
    pos = 0
    for title, body in found:
        start = text.index(body, pos)
        assert text[:start].endswith(f"{title}\n{BYLINE}\n") or text[:start].endswith(f"{title}\n\n{BYLINE}\n")
        assert BYLINE not in body and len(body) > 1000
        pos = start + len(body)
    assert pos == len(text)  # the last work runs to the end


def test_works_names_a_missing_title():
    with pytest.raises(ValueError, match="ALL'S WELL"):
        works("HAMLET\n\nby William Shakespeare\nTo be.")


def test_the_folio_labels():
    counts = {g: sum(v == g for v in GENRES.values()) for g in (*CLASSES, None)}
    assert counts == {"comedy": 14, "history": 10, "tragedy": 11, None: 7}
    assert GENRES["THE WINTER'S TALE"] == "comedy" and GENRES["CYMBELINE"] == "tragedy"
    assert GENRES["THE SONNETS"] is None and GENRES["PERICLES PRINCE OF TYRE"] is None


@pytest.mark.parametrize("n", [1, 2, 3])
def test_held_out_takes_the_last_n_plays_of_each_genre(n):
    test = held_out(n)
    for genre in CLASSES:
        of_genre = [t for t, g in GENRES.items() if g == genre]
        assert [t for t in test if GENRES[t] == genre] == of_genre[-n:]
    train = [t for t, g in GENRES.items() if g and t not in test]
    assert not set(train) & set(test) and len(train) + len(test) == 35


def test_passages_are_distinct_whole_windows():
    ids = torch.arange(1000)
    x = passages(ids, 10, 64, torch.Generator().manual_seed(0))
    assert x.shape == (10, 64) and (x[:, 0] % 64 == 0).all() and len(set(x[:, 0].tolist())) == 10
    assert torch.equal(x, x[:, :1] + torch.arange(64))  # consecutive tokens
    with pytest.raises(ValueError, match="15 windows"):
        passages(ids, 16, 64, torch.Generator())


def test_labelled_is_balanced_and_shares_each_genre_among_its_plays():
    titles = [t for t, g in GENRES.items() if g]
    tokens = {t: torch.arange(i * 10_000, i * 10_000 + 2000) for i, t in enumerate(titles)}  # a play's id range
    x, y, source = labelled(tokens, titles, 40, 16, seed=0)
    assert torch.bincount(y).tolist() == [40, 40, 40] and len(source) == len(x) == 120
    for genre in CLASSES:
        per_play = [source.count(t) for t in titles if GENRES[t] == genre]
        assert sum(per_play) == 40 and max(per_play) - min(per_play) <= 1
    for row, label, title in zip(x, y, source, strict=True):
        assert CLASSES[label] == GENRES[title]
        assert (row // 10_000 == titles.index(title)).all()  # every token from its own play
    again = labelled(tokens, titles, 40, 16, seed=0)
    assert torch.equal(again[0], x) and not torch.equal(labelled(tokens, titles, 40, 16, seed=1)[0], x)


def test_the_head_reads_the_last_position(tiny):
    idx = torch.randint(0, 100, (4, 16))
    logits = tiny(idx)
    assert logits.shape == (4, 3)
    body = copy.deepcopy(tiny.gpt)
    body.lm_head = torch.nn.Identity()  # its forward now returns ln_f(h)
    with torch.no_grad():
        h = body(idx)[0]  # (B, T, C)
    torch.testing.assert_close(logits, tiny.head(h[:, -1]))
    assert tiny.head.weight.shape == (3, 16) and tiny.gpt.transformer.wte.weight.shape == (100, 16)


def test_tokens_after_a_position_cannot_change_its_logits(tiny):
    """What right-padding can and cannot do under the causal mask: the state at the last real token is the same
    with or without padding after it, so a padded batch must read that position, not position -1."""
    idx = torch.randint(0, 100, (2, 16))
    padded = idx.clone()
    padded[:, 10:] = 0  # a pad token after 10 real ones
    with torch.no_grad():
        every = tiny.gpt(padded)[0]  # (B, T, 3): the head at every position
        torch.testing.assert_close(every[:, 9], tiny(idx[:, :10]))
        assert not torch.equal(tiny(padded), tiny(idx[:, :10]))  # position -1 reads a pad


@pytest.mark.parametrize("trainable", ["head", "last", "all"])
def test_frozen_parameters_stay_as_they_were(trainable):
    model = freeze(ClassifierGPT(GPT(TINY), 3, seed=0), trainable)
    before = copy.deepcopy(model.state_dict())
    x, y = torch.randint(0, 100, (8, 16)), torch.randint(0, 3, (8,))
    finetune(model, x, y, FinetuneConfig(steps=2, batch_size=4, lr=1e-2))
    assert not model.training
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    trains = {n for n, p in model.named_parameters() if p.requires_grad}
    assert moved == trains  # every trainable parameter moved, no frozen one did
    expected = {"head": ("gpt.lm_head.",), "last": ("gpt.lm_head.", "gpt.transformer.h.1.", "gpt.transformer.ln_f.")}
    if trainable == "all":
        assert num_trainable(model) == sum(p.numel() for p in model.parameters())
    else:
        assert trains == {n for n, _ in model.named_parameters() if n.startswith(expected[trainable])}
    with pytest.raises(ValueError, match="trainable must be"):
        freeze(model, "body")


def test_finetune_is_reproducible_and_learns():
    x = torch.randint(0, 100, (64, 16))
    y = (x[:, -1] % 3 == 0).long()  # a rule on the last token
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        model = ClassifierGPT(GPT(TINY), 2, seed=1)
        runs.append(finetune(model, x, y, FinetuneConfig(steps=40, batch_size=16, lr=1e-2, seed=1)))
    assert runs[0] == runs[1]
    assert sum(runs[0][-5:]) < sum(runs[0][:5]) and accuracy(model, x, y) > 0.8


def test_predict_and_confusion(tiny):
    x = torch.randint(0, 100, (300, 16))
    pred = predict(tiny, x, batch_size=128)
    assert torch.equal(pred, tiny(x).argmax(-1))
    y = torch.randint(0, 3, (300,))
    cm = confusion(pred, y)
    assert (
        cm.sum() == 300
        and cm.diag().sum() == (pred == y).sum()
        and torch.equal(cm.sum(1), torch.bincount(y, minlength=3))
    )
    assert accuracy(tiny, x, y) == pytest.approx((pred == y).float().mean().item())


def test_a_gpt2_folder_fine_tunes_the_same_way(tmp_path):
    transformers = pytest.importorskip("transformers")
    from gptbook.hf import from_pretrained_dir

    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(
        transformers.GPT2Config(vocab_size=100, n_positions=32, n_embd=16, n_layer=2, n_head=2)
    )
    hf.save_pretrained(tmp_path)
    model = freeze(ClassifierGPT(from_pretrained_dir(tmp_path), 3, seed=0), "last")
    x, y = torch.randint(0, 100, (8, 16)), torch.randint(0, 3, (8,))
    finetune(model, x, y, FinetuneConfig(steps=2, batch_size=4))
    assert predict(model, x).shape == (8,)
