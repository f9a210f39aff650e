"""bits per character, the count baselines against hand-computed values, the longest copied piece."""

import math

import pytest
import torch

from gptbook.measures import bits_per_char, longest_copy, ngram_losses


def test_bits_per_char():
    assert bits_per_char(math.log(2), 10, 10) == pytest.approx(1.0)  # one bit per token, a token per character
    assert bits_per_char(4.0, 100, 400) == pytest.approx(1.0 / math.log(2))  # 4 characters per token


def test_ngram_losses_by_hand():
    train, val = torch.tensor([0, 1, 0, 1, 0, 2]), torch.tensor([0, 1, 2])
    uni, bi = ngram_losses(train, val, vocab_size=4, alpha=1.0, lam=0.5)
    p_uni = {0: 4 / 10, 1: 3 / 10, 2: 2 / 10, 3: 1 / 10}  # (count + 1) / (6 + 4)
    assert uni == pytest.approx(-(math.log(p_uni[1]) + math.log(p_uni[2])) / 2)
    # after 0: 1 twice, 2 once (of 3 zeros); after 1: 0 twice (of 2 ones)
    p01 = 0.5 * 2 / 3 + 0.5 * p_uni[1]
    p12 = 0.5 * 0 / 2 + 0.5 * p_uni[2]
    assert bi == pytest.approx(-(math.log(p01) + math.log(p12)) / 2)


def test_longest_copy():
    text = "to be or not to be, that is the question"
    assert longest_copy("so not to be, that was", text) == " not to be, that "
    assert longest_copy("xyz", text) == ""
    assert longest_copy("the question", text) == "the question"
