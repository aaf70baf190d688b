"""model.py: config validation, each architecture option against an independent computation, KV-cache
generation, init, FLOPs/MFU, presets, and Hugging Face GPT-2 interop (transformers is a test-only peer)."""
import math
import warnings

import pytest
import torch

import mfu
from hf import load_gpt2, save_gpt2
from mfu import device_peak_flops
from model import GPT, PRESETS, GPTConfig, apply_rope, rope_cache

TINY = dict(vocab_size=61, block_size=16, n_layer=2, n_head=4, n_embd=32)
VARIANTS = {
    "gpt2": dict(),
    "oec": dict(pos="rope", mlp="swiglu", qk_norm=True, bias=False, tie_embeddings=False, init="xavier"),
    "gqa_dyisru": dict(n_kv_head=2, norm="dyisru_sp", norm_alpha0_attn=1.0, logit_softcap=5.0),
    "mqa_rope_dyt": dict(n_kv_head=1, pos="rope", norm="dyt", mlp="gelu_tanh", qk_norm=True),
    "rmsnorm": dict(norm="rmsnorm", tie_embeddings=False),
}


def tiny(seed: int = 0, **kw) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(**(TINY | kw))).eval()


def _randomise(m: torch.nn.Module, std: float = 0.3) -> None:
    """Large random values in every parameter (norm gains around 1), so a dropped or mis-mapped tensor
    changes the logits far beyond the tolerance."""
    torch.manual_seed(123)
    with torch.no_grad():
        for name, p in m.named_parameters():
            p.copy_(torch.randn_like(p) * std + (1.0 if p.dim() == 1 and name.endswith(".weight") else 0.0))


# ---------------------------------------------------------------------------------------------- config

@pytest.mark.parametrize("kw, key", [
    (dict(n_embd=30), "n_embd"),
    (dict(n_kv_head=3), "n_kv_head"),
    (dict(pos="rope", n_embd=24, n_head=4), "head dim"),
    (dict(pos="rope", rope_fraction=0.3), "rope_fraction"),
    (dict(pos="rope", rope_theta=0.0), "rope_theta"),
    (dict(norm="batchnorm"), "norm"),
    (dict(pos="alibi"), "pos"),
    (dict(mlp="relu"), "mlp"),
    (dict(init="kaiming"), "init"),
    (dict(dropout=1.0), "dropout"),
    (dict(logit_softcap=0.0), "logit_softcap"),
])
def test_config_errors_name_the_key(kw, key):
    with pytest.raises(ValueError, match=key):
        GPTConfig(**(TINY | kw))


def test_too_long_input_is_an_error():
    with pytest.raises(ValueError, match="block_size=16"):
        tiny()(torch.zeros(1, 17, dtype=torch.long))


# ---------------------------------------------------------------------------------------------- forward

@pytest.mark.parametrize("variant", VARIANTS)
def test_forward_is_causal(variant):
    m = tiny(**VARIANTS[variant])
    idx = torch.randint(0, 61, (2, 12))
    logits = m(idx)
    assert logits.shape == (2, 12, 61) and logits.dtype == torch.float32
    idx2 = idx.clone()
    idx2[:, 7:] = (idx2[:, 7:] + 1) % 61
    torch.testing.assert_close(m(idx2)[:, :7], logits[:, :7])  # the past cannot see the future
    assert (m(idx2)[:, 7:] - logits[:, 7:]).abs().max() > 1e-4


def test_gqa_equals_mha_with_repeated_kv_heads():
    """n_kv_head=2 must equal multi-head attention whose k/v heads are copies (independent check of GQA)."""
    gqa = tiny(n_kv_head=2)
    mha = tiny(seed=1)
    mha.load_state_dict({k: v for k, v in gqa.state_dict().items() if "c_attn" not in k}, strict=False)
    hs, C = 8, 32
    with torch.no_grad():
        for bg, bm in zip(gqa.transformer.h, mha.transformer.h):
            for part in ("weight", "bias"):
                w = getattr(bg.attn.c_attn, part)
                q, k, v = w.split([C, 2 * hs, 2 * hs], dim=0)
                k, v = (t.unflatten(0, (2, hs)).repeat_interleave(2, dim=0).flatten(0, 1) for t in (k, v))
                getattr(bm.attn.c_attn, part).copy_(torch.cat([q, k, v]))
    idx = torch.randint(0, 61, (2, 10))
    torch.testing.assert_close(gqa(idx), mha(idx))


def test_rope_matches_complex_reference():
    """Rotary on the first half of the head dim, interleaved pairs (lucidrains RotaryEmbedding(hs/2), as in
    the OEC code), against a complex-number implementation; the second half is untouched."""
    hs, T = 16, 7
    x = torch.randn(2, T, 3, hs, dtype=torch.float64)
    cos, sin = rope_cache(hs, T)
    out = apply_rope(x, cos.double(), sin.double())
    rot = hs // 2
    freqs = 10000.0 ** (-torch.arange(0, rot, 2, dtype=torch.float64) / rot)  # (rot/2,)
    angle = torch.arange(T, dtype=torch.float64)[:, None] * freqs  # (T, rot/2)
    z = torch.view_as_complex(x[..., :rot].reshape(2, T, 3, rot // 2, 2).contiguous())
    ref = torch.view_as_real(z * torch.polar(torch.ones_like(angle), angle)[:, None, :]).flatten(-2)
    torch.testing.assert_close(out[..., :rot], ref, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(out[..., rot:], x[..., rot:])
    # relative positions: <rope(q, m), rope(k, n)> depends on m - n only
    q, k = torch.randn(hs, dtype=torch.float64), torch.randn(hs, dtype=torch.float64)
    qs = apply_rope(q.expand(1, T, 1, hs), cos.double(), sin.double())[0, :, 0]
    ks = apply_rope(k.expand(1, T, 1, hs), cos.double(), sin.double())[0, :, 0]
    assert (qs[5] @ ks[3]).item() == pytest.approx((qs[3] @ ks[1]).item(), rel=1e-6)


def test_qk_norm_makes_attention_scale_invariant():
    """qk-LayerNorm per head: scaling the q/k projections must not change the output (and does without it)."""
    idx = torch.randint(0, 61, (2, 10))
    for qk_norm in (True, False):
        m = tiny(qk_norm=qk_norm, bias=False)
        _randomise(m)  # q, k far from LayerNorm's eps
        before = m(idx)
        with torch.no_grad():
            for b in m.transformer.h:
                b.attn.c_attn.weight[:64] *= 5.0  # the q and k rows
        same = torch.allclose(m(idx), before, atol=1e-4)
        assert same == qk_norm
        assert (m.transformer.h[0].attn.q_norm.weight.shape == (8,)) if qk_norm else not hasattr(
            m.transformer.h[0].attn, "q_norm")


def test_swiglu_width_and_formula():
    for name in ("oec-16m", "oec-29m", "oec-57m", "oec-109m", "oec-221m"):
        d = PRESETS[name]["n_embd"]
        with torch.device("meta"):
            m = GPT(GPTConfig(**PRESETS[name]))
        assert m.transformer.h[0].mlp.c_proj.in_features == 256 * math.ceil(2 / 3 * 4 * d / 256)
    m = tiny(mlp="swiglu", bias=False)
    mlp, x = m.transformer.h[0].mlp, torch.randn(3, 32)
    w, v = mlp.c_fc.weight.chunk(2)
    ref = (torch.nn.functional.silu(x @ w.T) * (x @ v.T)) @ mlp.c_proj.weight.T
    torch.testing.assert_close(mlp(x), ref)


def test_softcap_and_tying():
    capped = tiny(logit_softcap=2.0)
    plain = tiny(logit_softcap=None)
    _randomise(plain, std=1.0)
    capped.load_state_dict(plain.state_dict())
    idx = torch.randint(0, 61, (2, 8))
    raw = plain(idx)
    assert raw.abs().max() > 4  # the cap is active
    torch.testing.assert_close(capped(idx), 2.0 * torch.tanh(raw / 2.0))
    assert plain.lm_head.weight is plain.transformer.wte.weight is plain.output_embedding()
    untied = tiny(tie_embeddings=False)
    assert untied.lm_head.weight is not untied.transformer.wte.weight
    assert untied.output_embedding() is untied.lm_head.weight


def test_dropout_only_in_training():
    m = tiny(dropout=0.5)
    idx = torch.randint(0, 61, (2, 8))
    torch.testing.assert_close(m(idx), m(idx))
    m.train()
    assert not torch.allclose(m(idx), m(idx))


# ---------------------------------------------------------------------------------------------- generate

@pytest.mark.parametrize("variant", VARIANTS)
def test_cached_generation_equals_uncached_greedy(variant):
    m = tiny(**VARIANTS[variant])
    _randomise(m, std=0.5)  # peaked distributions: ties in argmax would make the comparison meaningless
    idx = torch.randint(0, 61, (2, 5))
    out = m.generate(idx, max_new_tokens=20, temperature=0)  # runs past block_size=16: cache refills
    ref = idx
    for _ in range(20):
        logits = m(ref[:, -16:])[:, -1]
        ref = torch.cat([ref, logits.argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(out, ref)
    assert torch.equal(m.generate(idx, 20, temperature=1.0, top_k=1), ref)  # top-1 sampling is greedy


def test_kv_cache_chunked_prefill_equals_full_forward():
    """A prompt fed in chunks through the cache (T > 1 with past keys: explicit offset mask) = one forward."""
    from model import KVCache

    m = tiny(**VARIANTS["mqa_rope_dyt"])
    idx = torch.randint(0, 61, (2, 14))
    kv = KVCache(m.config.n_layer, m.config.block_size)
    chunks = [m(idx[:, a:b], kv_cache=kv) for a, b in ((0, 5), (5, 6), (6, 14))]
    torch.testing.assert_close(torch.cat(chunks, dim=1), m(idx), atol=1e-5, rtol=1e-5)


def test_nanogpt_positional_targets_fail_with_how_to_get_the_loss():
    """nanoGPT's model(idx, targets) (second positional argument) stops with a TypeError that names the
    keyword form; the keyword form returns the loss, and the logits come from model(idx)."""
    from losses import compute_loss

    m = tiny()
    idx, y = torch.randint(0, 61, (2, 8)), torch.randint(0, 61, (2, 8))
    with pytest.raises(TypeError, match=r"loss, terms = model\(idx, targets=targets\)"):
        m(idx, y)
    loss, terms = m(idx, targets=y)
    torch.testing.assert_close(loss, compute_loss(m(idx), y, None)[0])
    assert m(idx).shape == (2, 8, m.config.vocab_size)


def test_sampling_is_seeded_and_stops():
    m = tiny()
    idx = torch.zeros(3, 1, dtype=torch.long)
    torch.manual_seed(5)
    a = m.generate(idx, 12, temperature=1.5, top_k=10)
    torch.manual_seed(5)
    assert torch.equal(m.generate(idx, 12, temperature=1.5, top_k=10), a) and a.shape == (3, 13)
    stops = [int(a[0, 4]), int(a[1, 2]), int(a[2, 6])]  # every row samples one of these within 6 steps
    end = max(int((torch.isin(row[1:], torch.tensor(stops))).nonzero()[0]) + 2 for row in a)
    torch.manual_seed(5)
    c = m.generate(idx, 12, temperature=1.5, top_k=10, stop_tokens=stops)
    assert torch.equal(c, a[:, :end])  # stopped right after the last row reached a stop token


# ---------------------------------------------------------------------------------------------- init, counts

def test_init_normal_and_xavier():
    L, d = 4, 256
    base = dict(vocab_size=2000, block_size=64, n_layer=L, n_head=4, n_embd=d)
    m = GPT(GPTConfig(**base))
    h = m.transformer.h[0]
    assert h.attn.c_attn.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert m.transformer.wpe.weight.std().item() == pytest.approx(0.02, rel=0.05)
    for w in (h.attn.c_proj.weight, h.mlp.c_proj.weight):
        assert w.std().item() == pytest.approx(0.02 / math.sqrt(2 * L), rel=0.05)
    assert h.attn.c_attn.bias.abs().max() == 0 and h.ln_1.weight.min() == 1
    m = GPT(GPTConfig(**base, init="xavier", mlp="swiglu", tie_embeddings=False, pos="rope", bias=False))
    h, hidden = m.transformer.h[0], 768
    assert h.attn.c_attn.weight.std().item() == pytest.approx(math.sqrt(2 / (d + 3 * d)), rel=0.05)
    for half in h.mlp.c_fc.weight.chunk(2):  # W and V initialised as separate layers, as in the OEC code
        assert half.std().item() == pytest.approx(math.sqrt(2 / (d + hidden)), rel=0.05)
    assert h.mlp.c_proj.weight.std().item() == pytest.approx(math.sqrt(2 / (d + hidden)), rel=0.05)
    assert h.attn.c_proj.weight.std().item() == pytest.approx(0.02 / math.sqrt(2 * L), rel=0.05)
    assert m.transformer.wte.weight.std().item() == pytest.approx(d ** -0.5, rel=0.05)
    assert m.lm_head.weight.std().item() == pytest.approx(math.sqrt(2 / (d + 2000)), rel=0.05)


def test_meta_device_init():
    cfg = GPTConfig(**(TINY | dict(pos="rope", norm="dyt", norm_alpha0=0.8)))
    with torch.device("meta"):
        m = GPT(cfg)
    m.to_empty(device="cpu")
    m.init_weights()
    ref = GPT(cfg)
    torch.testing.assert_close(m.rope_cos, ref.rope_cos)
    assert m.transformer.h[0].ln_1.alpha.item() == pytest.approx(0.8)
    assert torch.isfinite(m(torch.randint(0, 61, (1, 16)))).all()


def test_num_params_and_flops():
    tied, untied = tiny(), tiny(tie_embeddings=False)
    V, C, T, L = 61, 32, 16, 2
    total = sum(p.numel() for p in tied.parameters())
    assert tied.num_params(non_embedding=False) == total
    assert tied.num_params() == total - T * C  # wpe only: tied wte is also the head
    assert untied.num_params(non_embedding=False) == total + V * C
    assert untied.num_params() == total - T * C  # untied: wte is a lookup; lm_head counts
    assert tied.flops_per_token() == 6 * tied.num_params() + 12 * L * T * C
    assert device_peak_flops("cpu") is None and tied.estimate_mfu(1000.0, "cpu") is None  # no honest CPU peak
    assert mfu.peak_flops("cpu") == (None, mfu.NO_CPU_PEAK)
    assert set(mfu.PEAK_FLOPS) >= {"A100", "H100", "H200", "B200"}


def test_meta_init_keeps_embeddings_tied():
    """F6: to_empty() from the meta device made wte and lm_head two Parameters (GPT-2 124M became 163M)."""
    cfg = GPTConfig(**TINY)
    with torch.device("meta"):
        m = GPT(cfg)
    m.to_empty(device="cpu")
    m.init_weights()
    assert m.transformer.wte.weight is m.lm_head.weight
    assert m.num_params(non_embedding=False) == tiny().num_params(non_embedding=False)
    untied = GPTConfig(**(TINY | dict(tie_embeddings=False)))
    with torch.device("meta"):
        m = GPT(untied)
    m.to_empty(device="cpu")
    assert m.transformer.wte.weight is not m.lm_head.weight  # an untied model stays untied


@pytest.mark.parametrize("variant", ["gpt2", "oec"])
def test_forward_with_targets_is_compute_loss(variant):
    """F10: model(x, targets=y, ...) computes losses.compute_loss inside forward (so torch.compile compiles it
    with the model): the same loss, terms and gradients as the loss computed outside, bitwise."""
    from losses import IGNORE_INDEX, compute_loss
    x = torch.randint(0, 61, (3, 16), generator=torch.Generator().manual_seed(1))
    y = torch.roll(x, -1, dims=1)
    y[0, :5] = IGNORE_INDEX
    kw = dict(z_loss=1e-2, mu_loss=1e-1)
    a, b = tiny(**VARIANTS[variant]).train(), tiny(**VARIANTS[variant]).train()
    loss_a, terms_a = a(x, targets=y, **kw)
    loss_b, terms_b = compute_loss(b(x), y, b.output_embedding(), **kw)
    assert torch.equal(loss_a, loss_b) and terms_a.keys() == terms_b.keys() == {"ce", "z_loss", "mu_loss"}
    assert all(torch.equal(terms_a[k], terms_b[k]) for k in terms_a)
    loss_a.backward()
    loss_b.backward()
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(pa.grad, pb.grad), name


@pytest.mark.slow
def test_compiled_loss_equals_eager():
    """F10: torch.compile over forward + loss (one graph) gives the eager loss and gradients (fp32, CPU)."""
    x = torch.randint(0, 61, (2, 16), generator=torch.Generator().manual_seed(2))
    y = torch.roll(x, -1, dims=1)
    eager, compiled = tiny(**VARIANTS["oec"]).train(), tiny(**VARIANTS["oec"]).train()
    fn = torch.compile(compiled, fullgraph=True)  # fullgraph: a graph break would leave the loss eager
    loss_e, _ = eager(x, targets=y, z_loss=1e-2, mu_loss=1e-1)
    loss_c, _ = fn(x, targets=y, z_loss=1e-2, mu_loss=1e-1)
    torch.testing.assert_close(loss_c, loss_e, rtol=1e-5, atol=1e-6)
    loss_e.backward()
    loss_c.backward()
    for pe, pc in zip(eager.parameters(), compiled.parameters()):
        torch.testing.assert_close(pc.grad, pe.grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name, tflops", [
    ("NVIDIA H100 80GB HBM3", 989.5), ("NVIDIA H100 PCIe", 756.5), ("NVIDIA H100 NVL", 835.5),
    ("NVIDIA H200", 989.5), ("NVIDIA H200 NVL", 835.5), ("NVIDIA GH200 480GB", 989.5),
    ("NVIDIA A100-SXM4-80GB", 312.0), ("NVIDIA A100 80GB PCIe", 312.0), ("NVIDIA B200", 2250.0),
    ("NVIDIA GeForce RTX 4090", None)])
def test_gpu_peak_flops_per_device_name(name, tflops):
    """Dense bf16 peaks (datasheet sparse figures / 2); PCIe and NVL parts are not taken for SXM ones."""
    peak = mfu.gpu_peak_flops(name)
    assert (peak is None) if tflops is None else peak == pytest.approx(tflops * 1e12)


def test_mfu_divides_by_one_fixed_peak(monkeypatch):
    """The peak is found once and never moves: a rate above it is not hidden by raising the peak to the rate
    (which showed 100% whenever a run beat a weak timed probe), and no warning is given per call."""
    m = tiny()
    monkeypatch.setitem(mfu._PEAKS, ("cpu", torch.float32), (1e6, "cpu: test peak"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert m.estimate_mfu(1e6, "cpu") == pytest.approx(m.flops_per_token())  # above the peak: shown as is
        assert m.estimate_mfu(5e5, "cpu") == pytest.approx(m.flops_per_token() / 2)
    assert mfu.peak_flops("cpu") == (1e6, "cpu: test peak")
    # training windows shorter than the context: attention FLOPs use the window length
    assert m.flops_per_token(seq_len=8) == 6 * m.num_params() + 12 * 2 * 8 * 32


def test_presets_published_shapes():
    """GPT-SW3 totals (Ekgren et al. 2023, arXiv:2305.12987; HF config.json shapes); GPT-2 124M; OEC sizes
    count all but the input embedding."""
    expected = {"gpt-sw3-126m": 135.8e6, "gpt-sw3-356m": 369.9e6, "gpt-sw3-1.3b": 1.344e9,
                "gpt-sw3-6.7b": 6.715e9, "gpt-sw3-20b": 20.34e9, "gpt-sw3-40b": 39.20e9,
                "gpt2": 124.4e6, "coupled-adam-355m": 354.6e6}
    oec = {"oec-16m": 16e6, "oec-29m": 29e6, "oec-57m": 57e6, "oec-109m": 109e6, "oec-221m": 221e6}
    assert len(PRESETS) == 17
    for name, kw in PRESETS.items():
        with torch.device("meta"):
            m = GPT(GPTConfig(**kw))
        if name in expected:
            assert m.num_params(non_embedding=False) == pytest.approx(expected[name], rel=2e-3), name
        if name in oec:
            assert m.num_params() == pytest.approx(oec[name], rel=0.05), name
            assert (m.config.pos, m.config.mlp, m.config.qk_norm, m.config.bias, m.config.tie_embeddings,
                    m.config.init, m.config.n_head) == ("rope", "swiglu", True, False, False, "xavier", 4)
    assert PRESETS["dyisru-760m"]["norm"] == "dyisru_sp"


# ---------------------------------------------------------------------------------------------- Hugging Face

@pytest.mark.parametrize("act, tie", [("gelu_new", True), ("gelu", False)])
def test_from_hf_matches_transformers(tmp_path, act, tie):
    transformers = pytest.importorskip("transformers")
    hc = transformers.GPT2Config(vocab_size=61, n_positions=16, n_embd=32, n_layer=2, n_head=4,
                                 bos_token_id=0, eos_token_id=0, activation_function=act,
                                 tie_word_embeddings=tie)
    hf = transformers.GPT2LMHeadModel(hc).eval()
    torch.manual_seed(3)
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.3)  # random biases and LN params too
    hf.save_pretrained(tmp_path / "safetensors")
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "config.json").write_text((tmp_path / "safetensors" / "config.json").read_text())
    torch.save(hf.state_dict(), tmp_path / "bin" / "pytorch_model.bin")
    idx = torch.randint(0, 61, (2, 16))
    with torch.no_grad():
        ref = hf(idx).logits
    for folder in ("safetensors", "bin"):
        ours = load_gpt2(tmp_path / folder).eval()
        assert ours.config.mlp == ("gelu_tanh" if act == "gelu_new" else "gelu")
        assert ours.config.tie_embeddings == tie
        with torch.no_grad():
            assert (ours(idx) - ref).abs().max().item() <= 1e-4


@pytest.mark.parametrize("kw", [dict(), dict(bias=False, tie_embeddings=False, mlp="gelu")])
def test_save_hf_loads_in_transformers(tmp_path, kw):
    transformers = pytest.importorskip("transformers")
    m = tiny(**(dict(mlp="gelu_tanh") | kw))
    _randomise(m)
    save_gpt2(m, tmp_path)
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    idx = torch.randint(0, 61, (2, 16))
    with torch.no_grad():
        assert (hf(idx).logits - m(idx)).abs().max().item() <= 1e-4
    assert (hf.lm_head.weight is hf.transformer.wte.weight) == m.config.tie_embeddings
    back = load_gpt2(tmp_path).eval()  # and back again
    torch.testing.assert_close(back(idx), m(idx))


def test_hf_bad_input(tmp_path):
    with pytest.raises(ValueError, match=r"norm='rmsnorm'.*pos='rope'.*mlp='swiglu'"):
        save_gpt2(tiny(norm="rmsnorm", pos="rope", mlp="swiglu"), tmp_path / "x")
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_gpt2(tmp_path / "missing")
    save_gpt2(tiny(), tmp_path / "ok")
    (tmp_path / "ok" / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors or pytorch_model.bin"):
        load_gpt2(tmp_path / "ok")


# -----------------------------------------------------------------------------------------------------------
# sampling: GPT.generate

def _planted_gpt(logits):
    """A GPT whose next-token logits are `logits` whatever the context (ln_f weight 0, bias e_0; the output
    embedding's column 0 holds the logits), as in test_sample.py."""
    import torch

    from model import GPT, GPTConfig

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=len(logits), block_size=8, n_layer=1, n_head=2, n_embd=16, bias=True,
                          tie_embeddings=False))
    with torch.no_grad():
        model.transformer.ln_f.weight.zero_()
        model.transformer.ln_f.bias.zero_()
        model.transformer.ln_f.bias[0] = 1.0
        model.lm_head.weight[:, 0] = logits
    return model.eval()


def test_generate_default_temperature_and_top_k_above_the_batch_size():
    """The default temperature is 1: 40k one-token draws follow softmax(logits) (kills a default of 2.0). top_k
    keeps k tokens also when k exceeds the number of rows (sample.py passes one prompt): 2 rows x 40 tokens
    with top_k=3 draw exactly the 3 most likely tokens (kills k clipped to logits.size(-2), the rows)."""
    import torch

    logits = torch.tensor([2.0, 1.5, 1.0, 0.0, -0.5, -1.0])
    model = _planted_gpt(logits)
    torch.manual_seed(1)
    n = 40_000
    new = model.generate(torch.zeros(n, 1, dtype=torch.long), 1)[:, -1]
    freq = torch.bincount(new, minlength=6).double() / n
    want = torch.softmax(logits.double(), 0)
    se = (want * (1 - want) / n).sqrt()
    assert torch.all((freq - want).abs() <= 5 * se), (freq, want)
    torch.manual_seed(1)
    new = model.generate(torch.zeros(2, 1, dtype=torch.long), 40, top_k=3)[:, 1:]
    assert set(new.flatten().tolist()) == {0, 1, 2}  # P(token 2 never drawn in 80) = 0.81^80 ~ 5e-8


def test_generate_uses_the_kv_cache_and_equals_full_recompute():
    """Greedy generation with a random model equals the argmax of a full forward pass on the (cropped) context
    at every step, before and past block_size; after the prompt, each step feeds only the new token through the
    KV cache until the context reaches block_size, then refills with the last block_size tokens."""
    import torch

    from model import GPT, GPTConfig

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=32, block_size=8, n_layer=2, n_head=2, n_embd=16)).eval()
    prompt = torch.randint(0, 32, (2, 3))
    lengths, hidden = [], model.hidden_states

    def spy(idx, kv=None):
        lengths.append(idx.size(1))
        return hidden(idx, kv)

    model.hidden_states = spy
    out = model.generate(prompt, 10, temperature=0)
    assert lengths == [3, 1, 1, 1, 1, 1, 8, 8, 8, 8]  # prompt, 5 cached steps (pos 3..7), then refills
    del model.hidden_states
    ctx = prompt
    with torch.no_grad():
        for _ in range(10):
            logits = model(ctx[:, -8:])
            ctx = torch.cat((ctx, logits[:, -1].argmax(-1, keepdim=True)), 1)
    assert torch.equal(out, ctx)
