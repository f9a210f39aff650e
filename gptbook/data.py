"""Text -> token ids -> (x, y) training windows, where y is x shifted left by one token."""

from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from gptbook.corpora import CORPORA, FETCH_HINT, corpus
from gptbook.tokenizer import CharTokenizer, decode, encode


def data_path(path) -> Path:
    """`path` if it exists; else, if it names one of the book's corpora ("shakespeare" or "shakespeare.txt"), that."""
    path = Path(path)
    if path.is_file():
        return path
    for name, c in CORPORA.items():
        if str(path) in (name, c.file):
            return corpus(name, download=False)
    raise FileNotFoundError(f"data file not found: {path} ({FETCH_HINT})")


def load_text(path) -> str:
    """Read a UTF-8 text file, with one-line errors for missing, binary or empty files."""
    path = data_path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: a byte-order mark (Windows editors) is not text
    except UnicodeDecodeError:
        raise ValueError(f"data file is not UTF-8 text: {path}") from None
    if not text.strip():
        raise ValueError(f"data file is empty: {path}")
    return text


def load_tokens(path) -> torch.Tensor:
    """A text file as a 1-D LongTensor of GPT-2 token ids."""
    try:
        ids = encode(load_text(path))
    except ValueError as e:
        if "<|endoftext|>" not in str(e):
            raise
        raise ValueError(f"data file {path} contains <|endoftext|>, GPT-2's end-of-document token; remove it") from None
    return torch.tensor(ids, dtype=torch.long)


def train_val_split(ids: torch.Tensor, train_frac: float = 0.9) -> tuple[torch.Tensor, torch.Tensor]:
    """First `train_frac` of the tokens for training, the rest for validation (no shuffling: no leakage)."""
    n = int(train_frac * len(ids))
    return ids[:n], ids[n:]


def check_length(ids: torch.Tensor, block_size: int, what: str = "data") -> None:
    """A window needs block_size + 1 tokens: block_size inputs plus one more target."""
    if len(ids) < block_size + 1:
        raise ValueError(
            f"{what} has {len(ids)} tokens, fewer than block_size + 1 = {block_size + 1}; "
            f"use a smaller block_size or more text"
        )


def load_splits(path, block_size: int) -> dict:
    """{"train": the first 90% of a text file's tokens, "val": the rest}, each long enough for a window."""
    train_ids, val_ids = train_val_split(load_tokens(path))
    return checked_splits(path, block_size, train_ids, val_ids)


def load_char_splits(path, block_size: int) -> tuple[dict, CharTokenizer]:
    """load_splits' two texts, one id per character (the same validation text: bits per character compare)."""
    text, (train_ids, _) = load_text(path), train_val_split(load_tokens(path))
    tok, cut = CharTokenizer.of(text), len(decode(train_ids))
    train_chars, val_chars = (torch.tensor(tok.encode(t), dtype=torch.long) for t in (text[:cut], text[cut:]))
    return checked_splits(path, block_size, train_chars, val_chars), tok


def checked_splits(path, block_size: int, train_ids: torch.Tensor, val_ids: torch.Tensor) -> dict:
    """{"train": ..., "val": ...}, or an error naming the split that is too short for one window."""
    check_length(train_ids, block_size, f"{path}: the training split (90%)")
    check_length(val_ids, block_size, f"{path}: the validation split (10%)")
    return {"train": train_ids, "val": val_ids}


def num_windows(n_tokens: int, block_size: int, stride: int) -> int:
    """How many windows of block_size + 1 tokens fit when each starts `stride` after the last."""
    return max(0, (n_tokens - block_size - 1) // stride + 1)


class WindowDataset(Dataset):
    """Sliding windows over a token stream: item i is (ids[s:s+T], ids[s+1:s+T+1]) with s = i * stride."""

    def __init__(self, ids: torch.Tensor, block_size: int, stride: int | None = None):
        check_length(ids, block_size)
        self.ids, self.block_size = ids, block_size
        self.stride = stride or block_size  # default: non-overlapping windows
        if self.stride < 1:
            raise ValueError(f"stride must be >= 1, got {self.stride}")

    def __len__(self):
        return num_windows(len(self.ids), self.block_size, self.stride)

    def __getitem__(self, i):
        s = i * self.stride
        chunk = self.ids[s : s + self.block_size + 1]
        return chunk[:-1], chunk[1:]  # x, y: (T,), (T,)


def make_loader(ids, block_size, batch_size, stride=None, shuffle=True, num_workers=0, seed=None, drop_last=True):
    """A DataLoader of (x, y) batches, each (B, T); `seed` makes the shuffle order reproducible."""
    g = torch.Generator().manual_seed(seed) if seed is not None else None
    return DataLoader(
        WindowDataset(ids, block_size, stride),
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        drop_last=drop_last,
        generator=g,
    )


def get_batch(ids: torch.Tensor, block_size: int, batch_size: int, generator=None, device="cpu"):
    """B windows at random offsets: x, y each (B, T), y[:, t] is the token after x[:, t]."""
    check_length(ids, block_size)
    starts = torch.randint(len(ids) - block_size, (batch_size,), generator=generator)
    x = torch.stack([ids[s : s + block_size] for s in starts])
    y = torch.stack([ids[s + 1 : s + block_size + 1] for s in starts])
    return x.to(device), y.to(device)
