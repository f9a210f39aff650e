import math

import pytest
import torch

from gptbook.fused_loss import chunked_cross_entropy
from gptbook.model import GPT, GPTConfig
from gptbook.sampling import KVCache

V = 512  # a small vocabulary: these tests do not need GPT-2's
SMALL = dict(vocab_size=V, block_size=16, n_layer=2, n_head=4, n_embd=32)


def pair(**kw):
    """The same random weights under the explicit and the SDPA attention paths."""
    a = GPT(GPTConfig(**SMALL, attn_impl="explicit", **kw)).eval()
    b = GPT(GPTConfig(**SMALL, attn_impl="sdpa", **kw)).eval()
    b.load_state_dict(a.state_dict())
    return a, b


def test_shapes_and_loss_at_init_is_uniform():
    model = GPT(GPTConfig(**SMALL))
    idx = torch.randint(0, V, (4, 16))
    targets = torch.randint(0, V, (4, 16))
    logits, loss = model(idx, targets)
    assert logits.shape == (4, 16, V)
    assert abs(loss.item() - math.log(V)) < 0.2
    logits, loss = model(idx[:, :5])
    assert logits.shape == (4, 5, V) and loss is None


def test_weight_tying_and_param_names_follow_gpt2():
    model = GPT(GPTConfig(**SMALL))
    assert model.lm_head.weight is model.transformer.wte.weight
    names = set(model.state_dict())
    for n in [
        "transformer.wte.weight",
        "transformer.wpe.weight",
        "transformer.h.1.attn.c_attn.weight",
        "transformer.h.0.mlp.c_proj.bias",
        "transformer.ln_f.weight",
        "lm_head.weight",
    ]:
        assert n in names
    assert not any("causal" in n or "cache" in n for n in names)  # buffers are not checkpoint state
    counted = sum(p.numel() for p in model.parameters())
    assert model.num_params() == counted
    assert model.num_params(non_embedding=True) == counted - V * 32 - 16 * 32


def test_residual_projection_init_is_scaled():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=1000, block_size=16, n_layer=8, n_head=4, n_embd=256))
    h0 = model.transformer.h[0]
    assert abs(h0.attn.c_attn.weight.std().item() - 0.02) < 0.002
    assert abs(h0.mlp.c_proj.weight.std().item() - 0.02 / math.sqrt(16)) < 0.0005
    assert torch.count_nonzero(h0.attn.c_attn.bias) == 0


@pytest.mark.parametrize("pos_emb", ["learned", "rope", "none"])
def test_explicit_and_sdpa_attention_agree(pos_emb):
    a, b = pair(pos_emb=pos_emb)
    idx = torch.randint(0, V, (3, 16))
    torch.testing.assert_close(a(idx)[0], b(idx)[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("impl", ["explicit", "sdpa"])
@pytest.mark.parametrize("pos_emb", ["learned", "rope", "none"])
def test_causality_future_tokens_do_not_change_the_past(impl, pos_emb):
    model = GPT(GPTConfig(**SMALL, attn_impl=impl, pos_emb=pos_emb)).eval()
    idx = torch.randint(0, V, (2, 16))
    changed = idx.clone()
    changed[:, 10:] = torch.randint(0, V, (2, 6))
    before, after = model(idx)[0], model(changed)[0]
    torch.testing.assert_close(before[:, :10], after[:, :10], atol=1e-6, rtol=0)
    assert (before[:, 10:] - after[:, 10:]).abs().max() > 1e-3


def test_too_long_input_is_an_error():
    model = GPT(GPTConfig(**SMALL))
    with pytest.raises(ValueError, match="longer than block_size 16"):
        model(torch.zeros(1, 17, dtype=torch.long))


@pytest.mark.parametrize(
    "kw,msg",
    [
        (dict(n_embd=30, n_head=4), "divisible"),
        (dict(n_layer=0), "n_layer"),
        (dict(block_size=-1), "block_size"),
        (dict(dropout=1.0), "dropout"),
        (dict(attn_impl="flash"), "attn_impl"),
        (dict(pos_emb="alibi"), "pos_emb"),
    ],
)
def test_bad_config_is_a_clear_error(kw, msg):
    with pytest.raises(ValueError, match=msg):
        GPTConfig(**{**SMALL, **kw})


@pytest.mark.parametrize("impl", ["explicit", "sdpa"])
@pytest.mark.parametrize("pos_emb", ["learned", "rope", "none"])
def test_kv_cache_forward_matches_full_forward(impl, pos_emb):
    model = GPT(GPTConfig(**SMALL, attn_impl=impl, pos_emb=pos_emb)).eval()
    idx = torch.randint(0, V, (2, 12))
    full = model(idx)[0]
    cache = KVCache(model.config, batch_size=2)
    first = model(idx[:, :7], cache=cache)[0]
    rest = model(idx[:, 7:11], cache=cache)[0]  # several new tokens after a cached prefix
    last = model(idx[:, 11:], cache=cache, last_only=True)[0]  # one token: its query sees every cached key
    assert cache.pos == 12
    torch.testing.assert_close(torch.cat([first, rest, last], 1), full, atol=1e-5, rtol=0)


def test_kv_cache_misuse_is_a_clear_error():
    model = GPT(GPTConfig(**SMALL)).eval()
    cache = KVCache(model.config, batch_size=2)
    with pytest.raises(ValueError, match="batch size 2, got a batch of 3"):
        model(torch.zeros(3, 4, dtype=torch.long), cache=cache)
    model(torch.zeros(2, 10, dtype=torch.long), cache=KVCache(model.config, batch_size=2))
    full = KVCache(model.config, batch_size=2)
    model(torch.zeros(2, 16, dtype=torch.long), cache=full)
    with pytest.raises(ValueError, match="longer than block_size 16"):
        model(torch.zeros(2, 1, dtype=torch.long), cache=full)


def test_attention_maps_are_causal_distributions():
    model = GPT(GPTConfig(**SMALL)).eval()
    att = model.attention_maps(torch.randint(0, V, (1, 9)))
    assert att.shape == (2, 4, 9, 9)
    torch.testing.assert_close(att.sum(-1), torch.ones(2, 4, 9))
    assert torch.all(att.triu(1) == 0)
    assert model.transformer.h[0].attn.attn_impl == "sdpa"  # restored


def test_rope_has_no_position_table_and_is_relative():
    model = GPT(GPTConfig(**SMALL, pos_emb="rope")).eval()
    assert "transformer.wpe.weight" not in model.state_dict()
    # with rotary positions, attention scores depend only on the distance between tokens
    from gptbook.model import apply_rope, rope_tables

    cos, sin = rope_tables(16, 8)
    q, k = torch.randn(8), torch.randn(8)

    def score(i, j):
        qi = apply_rope(q.view(1, 1, 1, 8), cos[i : i + 1], sin[i : i + 1])
        kj = apply_rope(k.view(1, 1, 1, 8), cos[j : j + 1], sin[j : j + 1])
        return (qi * kj).sum().item()

    assert score(5, 2) == pytest.approx(score(13, 10), abs=1e-5)
    assert score(5, 2) != pytest.approx(score(5, 4), abs=1e-3)


def test_nope_sees_positions_only_through_the_causal_mask():
    torch.manual_seed(0)
    model = GPT(GPTConfig(**{**SMALL, "n_layer": 1}, pos_emb="none")).eval()
    assert "transformer.wpe.weight" not in model.state_dict() and not hasattr(model.transformer.h[0].attn, "rope_cos")
    assert model.num_params(non_embedding=True) == model.num_params() - V * 32
    # one layer, no positions: the last token attends to a set, so shuffling the tokens before it changes nothing
    idx = torch.randint(0, V, (1, 12))
    shuffled = torch.cat([idx[:, :-1][:, torch.randperm(11)], idx[:, -1:]], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(model(shuffled)[0][:, -1], model(idx)[0][:, -1])
        learned = GPT(GPTConfig(**{**SMALL, "n_layer": 1})).eval()
        assert not torch.allclose(learned(shuffled)[0][:, -1], learned(idx)[0][:, -1])
    # but it trains, and stays causal: the mask is still there
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    model(idx[:, :-1], idx[:, 1:])[1].backward()
    opt.step()
    model.eval()
    with torch.no_grad():
        changed = torch.cat([idx[:, :6], torch.randint(0, V, (1, 6))], dim=1)
        torch.testing.assert_close(model(changed)[0][:, :6], model(idx)[0][:, :6])


@pytest.mark.parametrize("vocab,chunk", [(1000, 128), (1024, 512), (1000, 1)])  # padded rows or not; 3, 1, 300 chunks
def test_chunked_loss_equals_plain_loss_and_gradients(vocab, chunk):
    h = torch.randn(300, 16, requires_grad=True)
    w = (0.1 * torch.randn(vocab, 16)).requires_grad_()
    t = torch.randint(0, vocab, (300,))
    plain = torch.nn.functional.cross_entropy(h @ w.t(), t)
    gh, gw = torch.autograd.grad(plain * 3.0, (h, w))  # a non-unit upstream gradient
    fast = chunked_cross_entropy(h, w, t, chunk_size=chunk)
    fh, fw = torch.autograd.grad(fast * 3.0, (h, w))
    torch.testing.assert_close(fast, plain)
    torch.testing.assert_close(fh, gh)
    torch.testing.assert_close(fw, gw)
    with torch.no_grad():  # evaluation: no gradient work, same value
        torch.testing.assert_close(chunked_cross_entropy(h, w, t, chunk_size=chunk), plain.detach())


def test_chunked_loss_of_confident_and_hopeless_predictions():
    """Huge logits: the log-sum-exp from the softmax's largest probability stays exact (no overflow, no log 0)."""
    h = torch.tensor([[30.0, 0.0], [-30.0, 0.0], [0.0, 0.0]], requires_grad=True)
    w = torch.tensor([[4.0, 0.0], [0.0, 1.0], [-4.0, 0.0]], requires_grad=True)  # logits up to +-120
    t = torch.tensor([0, 0, 1])  # right and sure, wrong and sure (loss 240), uniform
    plain = torch.nn.functional.cross_entropy(h @ w.t(), t)
    fast = chunked_cross_entropy(h, w, t)
    torch.testing.assert_close(fast, plain)
    for a, b in zip(torch.autograd.grad(fast, (h, w)), torch.autograd.grad(plain, (h, w)), strict=True):
        torch.testing.assert_close(a, b)


def test_chunked_loss_under_bfloat16_autocast_matches_float32():
    h = torch.randn(40, 16, requires_grad=True)
    w = (0.1 * torch.randn(100, 16)).requires_grad_()
    t = torch.randint(0, 100, (40,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fast = chunked_cross_entropy(h.bfloat16(), w, t)  # h as the bfloat16 blocks would give it
    assert fast.dtype == torch.float32
    torch.testing.assert_close(fast, torch.nn.functional.cross_entropy(h.bfloat16().float() @ w.t(), t))
    fast.backward()
    assert h.grad.dtype == torch.float32 and w.grad.dtype == torch.float32


def test_chunked_loss_model_trains_like_the_plain_one():
    cfg = dict(SMALL, dropout=0.0)
    plain = GPT(GPTConfig(**cfg))
    fast = GPT(GPTConfig(**cfg, chunked_loss=True))
    fast.load_state_dict(plain.state_dict())
    opts = [torch.optim.AdamW(m.parameters(), lr=1e-3) for m in (plain, fast)]
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        x, y = torch.randint(0, V, (2, 2, 16), generator=g)
        losses = []
        for m, opt in zip((plain, fast), opts, strict=True):
            logits, loss = m(x, y)
            losses.append(loss.item())
            opt.zero_grad()
            loss.backward()
            opt.step()
        assert losses[0] == pytest.approx(losses[1], abs=1e-5)
    assert logits is None  # the fast path never builds logits
    for p, q in zip(plain.parameters(), fast.parameters(), strict=True):
        torch.testing.assert_close(p, q, atol=1e-5, rtol=0)


def test_last_only_logits_are_the_last_row_of_the_full_logits():
    model = GPT(GPTConfig(**SMALL)).eval()
    idx = torch.randint(0, V, (3, 10))
    full, last = model(idx)[0], model(idx, last_only=True)[0]
    assert last.shape == (3, 1, V)
    torch.testing.assert_close(last, full[:, -1:], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="last_only"):
        model(idx, targets=idx, last_only=True)


def matmuls(fn) -> int:
    """How many matrix products fn runs (aten mm, addmm and in-place addmm_)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    return sum(e.count for e in prof.key_averages() if e.key in ("aten::mm", "aten::addmm", "aten::addmm_"))


def test_chunked_loss_does_no_gradient_work_under_no_grad():
    """Evaluation: one product per chunk (the logits), not three (logits, grad_h, grad_W)."""
    h = torch.randn(300, 16, requires_grad=True)
    w = (0.1 * torch.randn(V, 16)).requires_grad_()
    t = torch.randint(0, V, (300,))
    assert matmuls(lambda: chunked_cross_entropy(h, w, t, chunk_size=100)) == 3 * 3
    with torch.no_grad():
        assert matmuls(lambda: chunked_cross_entropy(h, w, t, chunk_size=100)) == 3
    assert matmuls(lambda: chunked_cross_entropy(h.detach(), w.detach(), t, chunk_size=100)) == 3
