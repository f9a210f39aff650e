"""Peer check against HuggingFace's GPT-2 (random init from a small config; nothing is downloaded)."""

import pytest
import torch

transformers = pytest.importorskip("transformers")
from gptbook.hf import from_hf_state_dict, from_pretrained_dir, to_hf  # noqa: E402
from gptbook.model import GPT, GPTConfig  # noqa: E402
from gptbook.sampling import GREEDY, generate  # noqa: E402

V = 1000  # a small vocabulary: nothing here needs GPT-2's
CFG = dict(vocab_size=V, n_positions=32, n_embd=64, n_layer=2, n_head=4)


@pytest.fixture(scope="module")
def hf():
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(transformers.GPT2Config(**CFG)).eval()


def our_config():
    return GPTConfig(vocab_size=V, block_size=32, n_layer=2, n_head=4, n_embd=64)


def test_logits_match_hf(hf):
    ours = from_hf_state_dict(hf.state_dict(), our_config()).eval()
    idx = torch.randint(0, V, (2, 32))
    with torch.no_grad():
        torch.testing.assert_close(ours(idx)[0], hf(idx).logits, atol=1e-5, rtol=0)


def test_greedy_generation_matches_hf(hf):
    ours = from_hf_state_dict(hf.state_dict(), our_config())
    prompt = torch.randint(0, V, (1, 5))
    theirs = hf.generate(
        prompt, max_new_tokens=20, do_sample=False, pad_token_id=0, attention_mask=torch.ones_like(prompt)
    )
    assert torch.equal(generate(ours, prompt, 20, GREEDY), theirs)


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_load_from_a_local_hf_folder(hf, tmp_path, fmt):
    hf.save_pretrained(tmp_path, safe_serialization=(fmt == "safetensors"))
    ours = from_pretrained_dir(tmp_path).eval()
    assert ours.config.block_size == 32 and ours.config.n_layer == 2
    idx = torch.randint(0, V, (1, 10))
    with torch.no_grad():
        torch.testing.assert_close(ours(idx)[0], hf(idx).logits, atol=1e-5, rtol=0)


def test_mismatched_state_dict_is_a_clear_error(hf):
    sd = dict(hf.state_dict())
    del sd["transformer.h.1.mlp.c_fc.bias"]
    with pytest.raises(ValueError, match="missing"):
        from_hf_state_dict(sd, our_config())
    with pytest.raises(ValueError, match="shape mismatch"):
        from_hf_state_dict(hf.state_dict(), GPTConfig(vocab_size=V, block_size=64, n_layer=2, n_head=4, n_embd=64))


def test_export_to_hf_is_the_inverse_of_import(hf):
    ours = from_hf_state_dict(hf.state_dict(), our_config())
    back = to_hf(ours).state_dict()
    for name, t in hf.state_dict().items():
        assert torch.equal(back[name], t), name


@pytest.mark.parametrize("pos_emb", ["rope", "none"])
def test_to_hf_refuses_a_model_without_learned_positions(pos_emb):
    with pytest.raises(ValueError, match=f"pos_emb='{pos_emb}'"):
        to_hf(GPT(GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=8, pos_emb=pos_emb)))
