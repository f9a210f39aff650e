import pytest

from gptbook.tokenizer import EOT_ID, VOCAB_SIZE, decode, encode, get_tokenizer


def test_the_verdict_gives_5145_tokens_and_round_trips(verdict_path):
    text = verdict_path.read_text(encoding="utf-8")
    ids = encode(text)
    assert len(ids) == 5145
    assert ids[:4] == [40, 367, 2885, 1464]
    assert decode(ids) == text


def test_vocab_and_special_token():
    enc = get_tokenizer()
    assert enc.n_vocab == VOCAB_SIZE == 50257
    assert enc.eot_token == EOT_ID == 50256
    assert decode([EOT_ID]) == "<|endoftext|>"


def test_endoftext_needs_an_explicit_allow():
    with pytest.raises(ValueError, match="allow_eot=True"):
        encode("The end.<|endoftext|>")
    ids = encode("The end.<|endoftext|>", allow_eot=True)
    assert ids[-1] == EOT_ID and EOT_ID not in ids[:-1]


def test_unicode_round_trip_through_bytes():
    text = "自回归 Transformer 🙂 café"
    assert decode(encode(text)) == text
