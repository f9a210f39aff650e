import pytest
import torch

from gptbook.data import (
    WindowDataset,
    check_length,
    get_batch,
    load_text,
    load_tokens,
    make_loader,
    num_windows,
    train_val_split,
)


def test_windows_are_shifted_by_one():
    ids = torch.arange(100)
    ds = WindowDataset(ids, block_size=8, stride=3)
    for i in range(len(ds)):
        x, y = ds[i]
        assert x.shape == y.shape == (8,)
        assert torch.equal(x[1:], y[:-1])
        assert x[0] == 3 * i


@pytest.mark.parametrize("n,T,stride", [(100, 8, 1), (100, 8, 3), (100, 8, 8), (9, 8, 1), (50, 10, 7)])
def test_window_count_formula(n, T, stride):
    ds = WindowDataset(torch.arange(n), T, stride)
    brute = sum(1 for s in range(0, n, stride) if s + T + 1 <= n)
    assert len(ds) == brute == num_windows(n, T, stride)
    x, y = ds[len(ds) - 1]  # the last window is complete
    assert len(x) == len(y) == T


def test_loader_batches_are_shuffled_reproducibly():
    ids = torch.arange(1000)
    a = [x for x, _ in make_loader(ids, 16, 4, seed=1)]
    b = [x for x, _ in make_loader(ids, 16, 4, seed=1)]
    assert all(torch.equal(p, q) for p, q in zip(a, b, strict=True))
    assert a[0].shape == (4, 16)
    plain = [x for x, _ in make_loader(ids, 16, 4, shuffle=False)]
    assert not all(torch.equal(p, q) for p, q in zip(a, plain, strict=True))


def test_get_batch_shapes_shift_and_range():
    ids = torch.arange(50)
    g = torch.Generator().manual_seed(0)
    x, y = get_batch(ids, block_size=10, batch_size=64, generator=g)
    assert x.shape == y.shape == (64, 10)
    assert torch.equal(y, x + 1)  # ids are consecutive integers
    assert int(y.max()) <= 49  # every window fits
    assert int(x[:, 0].max()) == 39  # the last start (50 - 10 - 1) is reachable


def test_too_short_data_is_a_clear_error():
    with pytest.raises(ValueError, match="fewer than block_size \\+ 1"):
        check_length(torch.arange(8), 8)
    check_length(torch.arange(9), 8)
    with pytest.raises(ValueError, match="block_size"):
        get_batch(torch.arange(5), 8, 2)


def test_split_has_no_overlap(verdict_path):
    ids = load_tokens(verdict_path)
    train, val = train_val_split(ids, 0.9)
    assert len(train) + len(val) == len(ids) == 5145
    assert torch.equal(torch.cat([train, val]), ids)


def test_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_text(tmp_path / "nope.txt")
    (tmp_path / "empty.txt").write_text("  \n")
    with pytest.raises(ValueError, match="empty"):
        load_text(tmp_path / "empty.txt")
    (tmp_path / "bin.dat").write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(ValueError, match="not UTF-8"):
        load_text(tmp_path / "bin.dat")
