"""The GPT: shapes, causality, initial loss, KV cache equivalence, sampling rules, Hugging Face export."""

import math
import pytest
import torch
from rdtcourse.core import seed_everything
from rdtcourse.gpt import GPT, Block, GPTConfig, KVCache, export_hf, generate, sample_next


def small(**kw):
    seed_everything(0)
    return GPT(GPTConfig(**{**dict(vocab_size=50, block_size=16, n_layer=2, n_head=2, n_embd=16, dropout=0.0), **kw}))


def test_config_validation():
    with pytest.raises(ValueError, match="divisible"):
        GPTConfig(n_embd=10, n_head=3)
    with pytest.raises(ValueError, match="dropout"):
        GPTConfig(dropout=1.5)


def test_forward_shapes_and_initial_loss():
    m = small(vocab_size=1000, n_embd=32)
    x, y = torch.randint(1000, (3, 16)), torch.randint(1000, (3, 16))
    # random targets: with tied weights, predicting the input itself would score better than chance
    logits, loss = m(x, y)
    assert logits.shape == (3, 16, 1000)
    assert abs(loss.item() - math.log(1000)) < 0.1
    logits, loss = m(x)
    assert loss is None and logits.shape == (3, 16, 1000)
    assert m(x, last_only=True)[0].shape == (3, 1, 1000)
    with pytest.raises(ValueError, match="block_size=16"):
        m(torch.randint(1000, (1, 17)))


def test_weights_are_tied():
    m = small()
    assert m.lm_head.weight is m.transformer.wte.weight


def test_gpt_is_causal():
    m = small().eval()
    x = torch.randint(50, (2, 12))
    x2 = x.clone()
    x2[:, 8:] = torch.randint(50, (2, 4))  # change only the future
    assert torch.allclose(m(x)[0][:, :8], m(x2)[0][:, :8], atol=1e-6)


def test_padding_mask():
    seed_everything(0)
    b = Block(16, 2, causal=False)
    x = torch.randn(1, 6, 16)
    pad = torch.tensor([[True] * 4 + [False] * 2])
    y1 = b(x, key_padding_mask=pad)
    x2 = x.clone()
    x2[:, 4:] = torch.randn(1, 2, 16)  # change only the padded positions
    y2 = b(x2, key_padding_mask=pad)
    assert torch.allclose(y1[:, :4], y2[:, :4], atol=1e-6)  # real tokens never attend to padding


def test_attention_bias_is_added_and_keeps_causality():
    seed_everything(0)
    x = torch.randn(1, 6, 16)
    b = Block(16, 2, causal=False).eval()
    far = torch.zeros(2, 6, 6)
    far[:, :, 3:] = -1e9  # a bias that forbids keys 3..5
    x2 = x.clone()
    x2[:, 3:] = torch.randn(1, 3, 16)
    assert torch.allclose(b(x, attn_bias=far)[:, :3], b(x2, attn_bias=far)[:, :3], atol=1e-5)
    c = Block(16, 2, causal=True).eval()
    zero = torch.zeros(2, 6, 6)  # a bias must not switch causality off
    assert torch.allclose(c(x, attn_bias=zero), c(x), atol=1e-6)


def test_cache_matches_full_forward():
    m = small().eval()
    x = torch.randint(50, (2, 10))
    full = m(x)[0]
    cache = KVCache(2)
    parts = [m(x[:, :6], cache=cache)[0], m(x[:, 6:7], cache=cache)[0], m(x[:, 7:], cache=cache)[0]]
    assert torch.allclose(torch.cat(parts, 1), full, atol=1e-5)


@pytest.mark.parametrize("temperature, top_k, n", [(0.0, None, 10), (1.0, 5, 10), (0.8, None, 30)])
def test_cached_generation_equals_uncached(temperature, top_k, n):
    m = small()
    p = torch.randint(50, (2, 3))
    a = generate(m, p, n, temperature, top_k, use_cache=True, generator=torch.Generator().manual_seed(1))
    b = generate(m, p, n, temperature, top_k, use_cache=False, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.shape == (2, 3 + n)  # n=30 runs past block_size=16


def test_sample_next_rules():
    logits = torch.tensor([[0.0, 5.0, 1.0, 4.0]])
    assert sample_next(logits, temperature=0).item() == 1
    g = torch.Generator().manual_seed(0)
    draws = {sample_next(logits, 1.0, top_k=2, generator=g).item() for _ in range(200)}
    assert draws == {1, 3}  # only the two most likely tokens survive top-k
    with pytest.raises(ValueError, match="temperature"):
        sample_next(logits, -1.0)
    with pytest.raises(ValueError, match="top_k"):
        sample_next(logits, 1.0, top_k=0)


def test_eos_stops_generation():
    m = small()
    p = torch.zeros(1, 1, dtype=torch.long)
    first = generate(m, p, 1, temperature=0)[0, -1].item()
    out = generate(m, p, 10, temperature=0, eos_token_id=first)
    assert out.shape == (1, 2)


def test_hf_export_same_logits(tmp_path):
    from transformers import AutoModelForCausalLM

    m = small().eval()
    export_hf(m, tmp_path / "hf")
    assert (tmp_path / "hf" / "model.safetensors").exists()
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    x = torch.randint(50, (2, 12))
    with torch.no_grad():
        assert torch.allclose(m(x)[0], hf(x).logits, atol=1e-4)
    with pytest.raises(ValueError, match="bias=True"):
        export_hf(small(bias=False), tmp_path / "nobias")
