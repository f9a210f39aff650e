import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from gptbook.model import GPT, GPTConfig
from gptbook.sampling import GREEDY, Sampling, generate, min_p_filter, sample_next, top_k_filter, top_p_filter
from gptbook.tokenizer import EOT_ID

V = 512  # a small vocabulary: these tests do not need GPT-2's


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=V, block_size=16, n_layer=2, n_head=4, n_embd=32)).eval()


@pytest.fixture(scope="module")
def rope_model():
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=V, block_size=16, n_layer=2, n_head=4, n_embd=32, pos_emb="rope")).eval()


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


def test_top_p_is_exact_in_float32_over_a_gpt2_sized_vocabulary():
    """The nucleus of float32 logits over 50257 tokens is the one float64 arithmetic finds, at every p."""
    for seed in range(20):
        z = torch.randn(1, 50257, generator=torch.Generator().manual_seed(seed)) * (1 + seed % 4)
        probs = F.softmax(z.double(), -1)[0].sort(descending=True).values
        for p in (0.5, 0.9, 0.95, 0.99, 0.999):
            want = int((probs.cumsum(0) - probs < p).sum())  # tokens ranked above each one fall short of p
            assert torch.isfinite(top_p_filter(z, p)).sum() == want, (seed, p)


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
        draws[t] = torch.cat([sample_next(logits, Sampling(temperature=t), g) for _ in range(4000)])
        share = (draws[t] == 0).float().mean().item()
        expected = F.softmax(logits / t, -1)[0, 0].item()
        assert share == pytest.approx(expected, abs=0.03)
    assert sample_next(logits, GREEDY).item() == 0  # greedy


@pytest.mark.parametrize("kw", [dict(temperature=-1), dict(top_k=0), dict(top_p=0.0), dict(top_p=1.5), dict(min_p=2.0)])
def test_bad_sampling_settings(kw):
    with pytest.raises(ValueError, match=next(iter(kw))):
        Sampling(**kw)


def test_sampling_settings_are_keyword_only(model):
    with pytest.raises(TypeError):
        Sampling(0.8, None, 0.9, 0.05)  # top_p and min_p side by side: easy to swap, so not positional
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(model, torch.zeros(1, 1, dtype=torch.long), -1)


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
@pytest.mark.parametrize("which", ["learned", "rope"])
def test_kv_cache_generation_equals_uncached(model, rope_model, which, prompt_len, kw):
    model = rope_model if which == "rope" else model
    prompt = torch.randint(0, V, (2, prompt_len), generator=torch.Generator().manual_seed(prompt_len))
    out = {}
    for cache in [True, False]:
        g = torch.Generator().manual_seed(123)
        out[cache] = generate(model, prompt, 30, Sampling(**kw), generator=g, use_kv_cache=cache)
    assert out[True].shape == (2, prompt_len + 30)
    assert torch.equal(out[True][:, :prompt_len], prompt)
    assert torch.equal(out[True], out[False])


@pytest.mark.parametrize("kw", [dict(temperature=0), dict(temperature=1.0, top_k=200)])
def test_generate_equals_the_plain_loop(model, kw):
    """generate's fast paths (last position only, KV cache, transposed LM head) give the plain loop's tokens."""
    prompt = torch.randint(0, V, (2, 5), generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(7)
    idx = prompt
    with torch.no_grad():
        for _ in range(20):  # past block_size 16: the window slides
            logits, _ = model(idx[:, -16:])  # all positions' logits, no cache
            idx = torch.cat([idx, sample_next(logits[:, -1], Sampling(**kw), g)], dim=1)
    for cache in (True, False):
        out = generate(
            model, prompt, 20, Sampling(**kw), generator=torch.Generator().manual_seed(7), use_kv_cache=cache
        )
        assert torch.equal(out, idx)


def test_seeded_sampling_is_reproducible_and_seed_dependent(model):
    prompt = torch.zeros(1, 1, dtype=torch.long)
    a = generate(model, prompt, 20, generator=torch.Generator().manual_seed(1))
    b = generate(model, prompt, 20, generator=torch.Generator().manual_seed(1))
    c = generate(model, prompt, 20, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)


class Scripted(torch.nn.Module):
    """A fake model: row r of the batch emits EOT once its sequence has ends[r] tokens, else token 1."""

    def __init__(self, ends):
        super().__init__()
        self.config = GPTConfig(vocab_size=EOT_ID + 1, block_size=32, n_layer=1, n_head=1, n_embd=1)
        self.ends = torch.tensor(ends)

    def forward(self, idx, cache=None, last_only=False):
        length = idx.size(1) + (0 if cache is None else cache.pos)  # tokens seen so far
        if cache is not None:
            cache.pos += idx.size(1)
        logits = torch.zeros(idx.size(0), 1, EOT_ID + 1)
        logits[:, 0, 1] = 1.0
        logits[self.ends == length, 0, EOT_ID] = 10.0
        return logits, None


@pytest.mark.parametrize("cache", [True, False])
def test_stop_at_endoftext_stops_each_row_at_its_own_end(cache):
    """Row 0 ends at its 4th token, row 1 at its 6th: row 0 is padded with EOT from then on, and the loop stops."""
    out = generate(Scripted([3, 5]), torch.zeros(2, 2, dtype=torch.long), 10, GREEDY, stop_at_eot=True,
                   use_kv_cache=cache)  # fmt: skip
    assert out.tolist() == [[0, 0, 1, EOT_ID, EOT_ID, EOT_ID], [0, 0, 1, 1, 1, EOT_ID]]
    out = generate(Scripted([3, 5]), torch.zeros(2, 2, dtype=torch.long), 10, GREEDY, use_kv_cache=cache)
    assert out.size(1) == 12 and out[0, 3].item() == EOT_ID and out[0, 4].item() == 1  # without: no stopping


def test_generate_restores_training_mode(model):
    model.train()
    generate(model, torch.zeros(1, 1, dtype=torch.long), 2)
    assert model.training
    model.eval()


def test_top_p_one_keeps_everything_even_for_a_sharp_distribution():
    logits = 3.0 * torch.randn(1, 50257, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(top_p_filter(logits, 1.0)).all()
