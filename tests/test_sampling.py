import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from gptbook.model import GPT, GPTConfig
from gptbook.sampling import generate, min_p_filter, sample_next, top_k_filter, top_p_filter


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=50257, block_size=16, n_layer=2, n_head=4, n_embd=32)).eval()


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(-8, 8, allow_nan=False), min_size=1, max_size=40),
    st.floats(0.01, 1.0),
)
def test_top_p_keeps_the_minimal_nucleus(values, p):
    logits = torch.tensor([values], dtype=torch.float64)
    kept = torch.isfinite(top_p_filter(logits, p))[0]
    probs = F.softmax(logits, -1)[0]
    assert kept.sum() >= 1
    assert probs[kept].sum() >= p - 1e-9 or kept.all()  # the nucleus reaches p
    # minimal: the kept set minus its least likely token falls short of p
    smallest = probs[kept].min()
    assert probs[kept].sum() - smallest < p + 1e-9
    # and it is a top set: nothing dropped is more likely than something kept
    if (~kept).any():
        assert probs[~kept].max() <= smallest + 1e-12


def test_top_k_keeps_k():
    logits = torch.tensor([[1.0, 5.0, 3.0, 4.0, 2.0]])
    kept = torch.isfinite(top_k_filter(logits, 2))
    assert kept.tolist() == [[False, True, False, True, False]]
    assert torch.isfinite(top_k_filter(logits, 99)).all()


def test_min_p_relative_to_the_top_token():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    kept = torch.isfinite(min_p_filter(probs.log(), 0.2))  # threshold 0.2 * 0.5 = 0.1
    assert kept.tolist() == [[True, True, True, False]]


def test_temperature_scales_the_distribution():
    logits = torch.tensor([[2.0, 1.0, 0.0]])
    draws = {}
    for t in [0.5, 1.0, 2.0]:
        g = torch.Generator().manual_seed(0)
        draws[t] = torch.cat([sample_next(logits, temperature=t, generator=g) for _ in range(4000)])
        share = (draws[t] == 0).float().mean().item()
        expected = F.softmax(logits / t, -1)[0, 0].item()
        assert share == pytest.approx(expected, abs=0.03)
    assert sample_next(logits, temperature=0).item() == 0  # greedy


@pytest.mark.parametrize(
    "kw",
    [dict(temperature=-1), dict(top_k=0), dict(top_p=0.0), dict(top_p=1.5), dict(min_p=2.0), dict(max_new_tokens=-1)],
)
def test_bad_sampling_args(model, kw):
    args = dict(max_new_tokens=3) | kw
    with pytest.raises(ValueError):
        generate(model, torch.zeros(1, 1, dtype=torch.long), **args)


@pytest.mark.parametrize("prompt_len", [3, 25])  # shorter and longer than block_size 16
@pytest.mark.parametrize(
    "kw",
    [
        dict(temperature=0),
        dict(temperature=0.9, top_k=50),
        dict(temperature=1.1, top_p=0.8),
        dict(temperature=1.0, top_k=100, top_p=0.9, min_p=0.01),
    ],
)
def test_kv_cache_generation_equals_uncached(model, prompt_len, kw):
    prompt = torch.randint(0, 50257, (2, prompt_len), generator=torch.Generator().manual_seed(prompt_len))
    out = {}
    for cache in [True, False]:
        g = torch.Generator().manual_seed(123)
        out[cache] = generate(model, prompt, 30, generator=g, use_kv_cache=cache, **kw)
    assert out[True].shape == (2, prompt_len + 30)
    assert torch.equal(out[True][:, :prompt_len], prompt)
    assert torch.equal(out[True], out[False])


@pytest.mark.parametrize("kw", [dict(temperature=0), dict(temperature=1.0, top_k=200)])
def test_generate_equals_the_plain_loop(model, kw):
    """generate's fast paths (last position only, KV cache, transposed LM head) give the plain loop's tokens."""
    prompt = torch.randint(0, 50257, (2, 5), generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(7)
    idx = prompt
    with torch.no_grad():
        for _ in range(20):  # past block_size 16: the window slides
            logits, _ = model(idx[:, -16:])  # all positions' logits, no cache
            idx = torch.cat([idx, sample_next(logits[:, -1], **kw, generator=g)], dim=1)
    for cache in (True, False):
        out = generate(model, prompt, 20, **kw, generator=torch.Generator().manual_seed(7), use_kv_cache=cache)
        assert torch.equal(out, idx)


def test_seeded_sampling_is_reproducible_and_seed_dependent(model):
    prompt = torch.zeros(1, 1, dtype=torch.long)
    a = generate(model, prompt, 20, generator=torch.Generator().manual_seed(1))
    b = generate(model, prompt, 20, generator=torch.Generator().manual_seed(1))
    c = generate(model, prompt, 20, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_stop_at_endoftext(model):
    class AlwaysEOT(torch.nn.Module):
        config = model.config

        def forward(self, idx, pos=0, use_cache=False, last_only=False):
            logits = torch.zeros(idx.size(0), 1 if last_only else idx.size(1), 50257)
            logits[..., 50256] = 10.0
            return logits, None

        def init_kv_cache(self, b):
            pass

        def free_kv_cache(self):
            pass

    out = generate(AlwaysEOT(), torch.zeros(1, 2, dtype=torch.long), 10, temperature=0, stop_at_eot=True)
    assert out.tolist() == [[0, 0, 50256]]
    out = generate(AlwaysEOT(), torch.zeros(1, 2, dtype=torch.long), 5, temperature=0)
    assert out.size(1) == 7


def test_generate_restores_training_mode(model):
    model.train()
    generate(model, torch.zeros(1, 1, dtype=torch.long), 2)
    assert model.training
    model.eval()
    assert all(b.attn.cache_k is None for b in model.transformer.h)


def test_top_p_one_keeps_everything_even_for_a_sharp_distribution():
    logits = 3.0 * torch.randn(1, 50257, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(top_p_filter(logits, 1.0)).all()
