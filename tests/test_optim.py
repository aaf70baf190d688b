"""optim.py: Coupled Adam vs torch AdamW and a hand-written reference, parameter groups, LR schedules at
hand-computed points, mu-centering, and the NER adaptive fine-tuning schedule replayed epoch by epoch."""
import io
import math

import pytest
import torch
from torch import nn

from optim import (
    CoupledAdam,
    configure_optimizer,
    gauge_shift_,
    get_lr,
    guarded_step,
    mu_centering_,
    mu_centering_where_,
)

# -----------------------------------------------------------------------------
# Coupled Adam

def _params(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(13, 5, generator=g), torch.randn(5, generator=g), torch.randn(3, 4, 2, generator=g)]


def _grads(step, shapes):
    g = torch.Generator().manual_seed(100 + step)
    return [torch.randn(s, generator=g) for s in shapes]


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
@pytest.mark.parametrize("avg_scale", [1.0, 7.0])
def test_uncoupled_equals_torch_adamw_step_for_step(weight_decay, avg_scale):
    ours = [nn.Parameter(p) for p in _params()]
    ref = [nn.Parameter(p.clone()) for p in _params()]
    opt = CoupledAdam([dict(params=ours, coupled=False)], lr=3e-2, betas=(0.9, 0.95), eps=1e-8,
                      weight_decay=weight_decay, avg_scale=avg_scale)
    opt_ref = torch.optim.AdamW(ref, lr=3e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=weight_decay)
    for step in range(6):
        for p, q, g in zip(ours, ref, _grads(step, [p.shape for p in ours])):
            p.grad, q.grad = g.clone(), g.clone()
        opt.step()
        opt_ref.step()
        for p, q in zip(ours, ref):
            # an ulp or two: CoupledAdam uses the bias correction of AdamW(capturable=True), on the device
            torch.testing.assert_close(p, q, atol=1e-7, rtol=2.4e-7)
        if step == 2:  # an LR change mid-run is honoured like in AdamW
            for group in opt.param_groups + opt_ref.param_groups:
                group["lr"] = 1e-2


class HostReads:
    """Counts the host reads of tensor values (the calls that make the CPU wait for a CUDA device): a CPU stand-in
    for torch.cuda.set_sync_debug_mode, patched onto torch.Tensor while the context is open."""
    NAMES = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__", "nonzero", "cpu", "numpy")

    def __enter__(self):
        self.calls, self._saved = [], {n: getattr(torch.Tensor, n) for n in self.NAMES}
        for name, fn in self._saved.items():
            setattr(torch.Tensor, name, self._counting(name, fn))
        return self

    def _counting(self, name, fn):
        def wrapper(t, *a, **kw):
            self.calls.append(name)
            return fn(t, *a, **kw)
        return wrapper

    def __exit__(self, *exc):
        for name, fn in self._saved.items():
            setattr(torch.Tensor, name, fn)


def _coupled_model_and_opt():
    from model import GPT, GPTConfig
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=8, vocab_size=17, block_size=8, tie_embeddings=False,
                          bias=False))  # a key bias has a ~0 gradient: Adam would amplify its rounding noise
    return model, configure_optimizer(model, "coupled_adam", learning_rate=1e-2)


def _backward(model, seed, scale=1.0):
    x = torch.randint(0, 17, (2, 8), generator=torch.Generator().manual_seed(seed))
    loss, _ = model(x, targets=x)
    (loss * scale).backward()


def test_guarded_coupled_adam_step_reads_nothing_back():
    """optim.guarded_step with CoupledAdam skips on the device (found_inf): no .item(), bool(), .tolist(),
    nonzero ... in the step, whether it steps or skips (on CUDA each would be a host-device sync per step)."""
    from optim import guarded_step
    model, opt = _coupled_model_and_opt()
    for ok in (True, False, True):
        _backward(model, 0)
        flag = torch.tensor(ok)
        with HostReads() as reads:
            guarded_step(opt, flag)
        assert reads.calls == [], reads.calls
    with HostReads() as reads:  # the counter sees what it should: AdamW without fused reads the flag back
        plain = torch.optim.AdamW(model.parameters())
        _backward(model, 0)
        guarded_step(plain, torch.tensor(True))
    assert "__bool__" in reads.calls


def test_coupled_adam_skip_on_device_leaves_everything_as_it_was():
    """A step skipped through found_inf (non-finite gradients) leaves weights, moments and step counts bitwise
    untouched; the next good steps equal those of a run without the skip and plain opt.step() (the bias
    correction's t does not count the skipped step)."""
    from optim import guarded_step
    (model, opt), (ref, opt_ref) = _coupled_model_and_opt(), _coupled_model_and_opt()
    _backward(model, 1, scale=float("nan"))
    before = [p.detach().clone() for p in model.parameters()]
    guarded_step(opt, torch.tensor(False))
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))
    assert all(st["step"].item() == 0 and not st["exp_avg"].any() and not st["exp_avg_sq"].any()
               for st in opt.state.values())
    for seed in (2, 3):
        _backward(model, seed)
        guarded_step(opt, torch.tensor(True))
        _backward(ref, seed)
        opt_ref.step()
        opt_ref.zero_grad()
    for p, q in zip(model.parameters(), ref.parameters()):  # (counting the skip would change t: by ~2x here)
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-8)
    assert {st["step"].item() for st in opt.state.values()} == {2.0}


def test_coupled_adam_resumes_an_int_step_count():
    """An older checkpoint's optimizer state holds the step as an int: it is moved to a device tensor and
    continues the count (the bias correction of step 3, not of step 1)."""
    W0, g = torch.randn(6, 4), torch.randn(6, 4)
    a, b = nn.Parameter(W0.clone()), nn.Parameter(W0.clone())
    oa, ob = CoupledAdam([a], lr=1e-2), CoupledAdam([b], lr=1e-2)
    for _ in range(2):
        a.grad, b.grad = g.clone(), g.clone()
        oa.step()
        ob.step()
    sd = ob.state_dict()
    sd["state"][0]["step"] = int(sd["state"][0]["step"].item())
    ob.load_state_dict(sd)
    a.grad, b.grad = g.clone(), g.clone()
    oa.step()
    ob.step()
    assert torch.equal(a, b) and ob.state[b]["step"].item() == 3.0


def _reference_coupled_adam(W, grads, lr, betas, eps, wd, avg_scale):
    """Coupled Adam (the authors' coupled_adam.py::_multi_tensor_adamw), written out with plain loops over rows
    and columns."""
    W = W.clone().double()
    V, H = W.shape
    m = torch.zeros(V, H, dtype=torch.float64)
    v = torch.zeros(V, H, dtype=torch.float64)
    b1, b2 = betas
    for t, G in enumerate(grads, start=1):
        G = G.double()
        W *= 1 - lr * wd
        m = b1 * m + (1 - b1) * G
        v = b2 * v + (1 - b2) * G * G
        for j in range(H):
            v_c = avg_scale * sum(v[i, j].item() for i in range(V)) / V
            for i in range(V):
                W[i, j] -= lr / (1 - b1 ** t) * m[i, j] / (math.sqrt(v_c) / math.sqrt(1 - b2 ** t) + eps)
    return W, v


@pytest.mark.parametrize("avg_scale,weight_decay", [(1.0, 0.0), (0.25, 0.1)])
def test_coupled_update_matches_hand_written_reference(avg_scale, weight_decay):
    g = torch.Generator().manual_seed(3)
    W0 = torch.randn(6, 4, generator=g, dtype=torch.float64)
    grads = [torch.randn(6, 4, generator=g, dtype=torch.float64) * (1 + torch.arange(6.)[:, None]) for _ in range(4)]
    W = nn.Parameter(W0.clone())
    opt = CoupledAdam([W], lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=weight_decay, avg_scale=avg_scale)
    for G in grads:
        W.grad = G.clone()
        opt.step()
    W_ref, v_ref = _reference_coupled_adam(W0, grads, 1e-2, (0.9, 0.95), 1e-8, weight_decay, avg_scale)
    torch.testing.assert_close(W.detach(), W_ref, atol=1e-12, rtol=1e-10)
    # the stored second moment stays per element (uncoupled), as in the authors' code
    torch.testing.assert_close(opt.state[W]["exp_avg_sq"], v_ref)
    assert not torch.allclose(opt.state[W]["exp_avg_sq"], opt.state[W]["exp_avg_sq"].mean(0, keepdim=True))


def test_coupled_rows_share_second_moment_and_keep_mu_fixed_for_ce_gradients():
    # one step from zero state: update_ij = -lr * g_ij / (sqrt(mean_k g_kj^2) + eps): the per-column denominator
    # is the same for every row, so update / grad is constant down each column ...
    V, H, N = 40, 8, 64
    g = torch.Generator().manual_seed(5)
    E = torch.randn(V, H, generator=g, dtype=torch.float64) * 0.02
    h = torch.randn(N, H, generator=g, dtype=torch.float64)
    targets = torch.randint(0, V, (N,), generator=g)
    targets[targets < V // 2] = 0  # skewed unigram distribution: rare tokens get tiny gradients
    W_c, W_a = nn.Parameter(E.clone()), nn.Parameter(E.clone())
    for W in (W_c, W_a):
        nn.functional.cross_entropy(h @ W.T, targets).backward()
    # CE gradient wrt the unembedding rows sums to zero over the vocabulary (Stollenwerk & Stollenwerk 2025,
    # arXiv:2502.08441)
    assert W_c.grad.sum(0).abs().max() < 1e-15
    lr = 1e-3
    CoupledAdam([W_c], lr=lr).step()
    torch.optim.AdamW([W_a], lr=lr, weight_decay=0.0).step()
    ratio = (W_c.detach() - E) / W_c.grad
    torch.testing.assert_close(ratio, ratio[:1].expand_as(ratio), rtol=1e-9, atol=0)
    # ... so the row updates sum to ~0 and mu does not move (SGD-like), while Adam moves mu
    mu_shift_coupled = (W_c.detach().mean(0) - E.mean(0)).norm().item()
    mu_shift_adam = (W_a.detach().mean(0) - E.mean(0)).norm().item()
    assert mu_shift_coupled < 1e-8
    assert mu_shift_adam > 1e-5
    assert mu_shift_adam > 1000 * mu_shift_coupled


def test_coupled_adam_state_dict_round_trip():
    def run(opt_params, steps, opt=None):
        opt = opt or CoupledAdam([dict(params=opt_params[:1]), dict(params=opt_params[1:], coupled=False)],
                                 lr=1e-2, weight_decay=0.1, avg_scale=2.0)
        for s in steps:
            for p, g in zip(opt_params, _grads(s, [p.shape for p in opt_params])):
                p.grad = g
            opt.step()
        return opt
    a = [nn.Parameter(p) for p in _params()]
    run(a, range(5))
    b = [nn.Parameter(p) for p in _params()]
    opt_b = run(b, range(3))
    c = [nn.Parameter(p.detach().clone()) for p in b]
    opt_c = CoupledAdam([dict(params=c[:1]), dict(params=c[1:], coupled=False)], lr=1.0)
    buf = io.BytesIO()
    torch.save(opt_b.state_dict(), buf)  # as in a checkpoint (a live state_dict shares the moment tensors)
    buf.seek(0)
    opt_c.load_state_dict(torch.load(buf))
    assert opt_c.param_groups[0]["avg_scale"] == 2.0 and opt_c.param_groups[1]["coupled"] is False
    run(c, range(3, 5), opt=opt_c)
    for p, q in zip(a, c):
        torch.testing.assert_close(p, q, atol=0, rtol=0)


# -----------------------------------------------------------------------------
# parameter groups

def _gpt(tie: bool, norm: str = "dyt", pos: str = "learned"):
    from model import GPT, GPTConfig
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=17, block_size=6, n_layer=2, n_head=2, n_embd=8, bias=True, norm=norm,
                         pos=pos, tie_embeddings=tie))


def _named_groups(model, opt) -> list[tuple[set[str], float, bool | None]]:
    names = {id(p): n for n, p in model.named_parameters()}
    return [({names[id(p)] for p in g["params"]}, g["weight_decay"], g.get("coupled")) for g in opt.param_groups]


def _nanogpt_rule(model) -> tuple[set[str], set[str]]:
    """nanoGPT's configure_optimizers (also the OEC and DyISRU code's), transcribed: every parameter with
    >= 2 dims is decayed, the rest not."""
    named = dict(model.named_parameters())
    return {n for n, p in named.items() if p.dim() >= 2}, {n for n, p in named.items() if p.dim() < 2}


def _coupled_adam_code_rule(model) -> tuple[set[str], set[str], set[str]]:
    """flxst/coupled-adam nanoGPT/model.py::configure_optimizers with embdecay=False, transcribed: decayed =
    >= 2 dims except names ending in '.wte.weight'; not decayed = < 2 dims; the embedding group (wd 0) = the
    >= 2-dim '.wte.weight'."""
    named = dict(model.named_parameters())
    emb = {n for n, p in named.items() if p.dim() >= 2 and n.endswith(".wte.weight")}
    return ({n for n, p in named.items() if p.dim() >= 2} - emb, {n for n, p in named.items() if p.dim() < 2},
            emb)


@pytest.mark.parametrize("tie", [True, False])
def test_default_groups_are_nanogpts(tie):
    """The default (a nanoGPT command line) decays wte, wpe, lm_head and every matrix, as nanoGPT does."""
    m = _gpt(tie)
    opt = configure_optimizer(m, "adamw", learning_rate=1e-3, weight_decay=0.1, betas=(0.9, 0.95))
    assert isinstance(opt, torch.optim.AdamW) and not opt.defaults["fused"]  # fused only on CUDA
    decay, no_decay = _nanogpt_rule(m)
    assert {"transformer.wte.weight", "transformer.wpe.weight"} <= decay
    assert ("lm_head.weight" in decay) == (not tie)  # tied: the one matrix is listed as transformer.wte.weight
    assert "transformer.h.0.ln_1.alpha" in no_decay
    assert _named_groups(m, opt) == [(decay, 0.1, None), (no_decay, 0.0, None)]


@pytest.mark.parametrize("optimizer", ["adamw", "coupled_adam"])
def test_coupled_adam_code_groups(optimizer):
    """decay_token_embedding=False reproduces the Coupled Adam code's groups in both of its arms (tied model)."""
    m = _gpt(tie=True, norm="layernorm")
    opt = configure_optimizer(m, optimizer, learning_rate=1e-3, weight_decay=0.1, decay_token_embedding=False)
    decay, no_decay, emb = _coupled_adam_code_rule(m)
    assert "transformer.wpe.weight" in decay and emb == {"transformer.wte.weight"}
    got = _named_groups(m, opt)
    if optimizer == "adamw":
        assert got == [(decay, 0.1, None), (no_decay | emb, 0.0, None)]
    else:
        assert got == [(decay, 0.1, False), (no_decay, 0.0, False), (emb, 0.0, True)]


@pytest.mark.parametrize("tie", [True, False])
@pytest.mark.parametrize("which", ["output", "input"])
def test_coupled_adam_couples_the_chosen_embedding(tie, which):
    """Untied: 'output' couples lm_head (the matrix the softmax gradient acts on), 'input' couples wte; tied:
    both are the one matrix. The coupled matrix keeps the decay the nanoGPT rule gives it."""
    m = _gpt(tie)
    opt = configure_optimizer(m, "coupled_adam", learning_rate=1e-3, weight_decay=0.1,
                              coupled_adam_avg_scale=0.5, coupled_adam_embedding=which)
    assert isinstance(opt, CoupledAdam) and all(g["avg_scale"] == 0.5 for g in opt.param_groups)
    target = m.lm_head.weight if which == "output" else m.transformer.wte.weight
    coupled = [g for g in opt.param_groups if g["coupled"]]
    assert len(coupled) == 1 and coupled[0]["params"] == [target] and coupled[0]["weight_decay"] == 0.1
    decay, no_decay = _nanogpt_rule(m)
    target_name = {id(p): n for n, p in m.named_parameters()}[id(target)]
    assert _named_groups(m, opt)[:2] == [(decay - {target_name}, 0.1, False), (no_decay, 0.0, False)]


def test_coupled_adam_moves_only_the_output_embedding_mean_untied():
    """One step on an untied GPT: the coupled lm_head's row updates share one v per column (Coupled Adam), so a
    CE gradient (rows sum to 0) leaves its mean row where it was; with plain AdamW it moves."""
    for optimizer, moved in (("coupled_adam", False), ("adamw", True)):
        m = _gpt(tie=False, norm="layernorm")
        opt = configure_optimizer(m, optimizer, learning_rate=1e-2, weight_decay=0.0)
        mu0 = m.lm_head.weight.detach().mean(0).clone()
        idx = torch.randint(0, 17, (4, 6), generator=torch.Generator().manual_seed(0))
        logits = m(idx)  # (B, T, V)
        torch.nn.functional.cross_entropy(logits.reshape(-1, 17), idx.roll(-1, 1).reshape(-1)).backward()
        opt.step()
        shift = (m.lm_head.weight.detach().mean(0) - mu0).norm().item()
        assert (shift > 1e-4) == moved, (optimizer, shift)


def test_configure_optimizer_bad_input():
    with pytest.raises(ValueError, match="unknown optimizer 'adam'.*--optimizer=adamw"):
        configure_optimizer(_gpt(True), "adam")
    with pytest.raises(ValueError, match="coupled_adam_embedding"):
        configure_optimizer(_gpt(True), "coupled_adam", coupled_adam_embedding="both")
    for which in ("input", "output"):  # no silent fallback to the other matrix
        with pytest.raises(ValueError, match=f"coupled_adam_embedding='{which}'.*output_embedding"):
            configure_optimizer(nn.Sequential(nn.Linear(3, 3)), "coupled_adam", coupled_adam_embedding=which)
    only_wte = nn.Module()  # a token embedding but no output_embedding(): 'output' must not couple wte instead
    only_wte.transformer = nn.ModuleDict(dict(wte=nn.Embedding(5, 3)))
    with pytest.raises(ValueError, match="coupled_adam_embedding='output'"):
        configure_optimizer(only_wte, "coupled_adam", coupled_adam_embedding="output")
    assert configure_optimizer(only_wte, "coupled_adam", coupled_adam_embedding="input").param_groups[-1]["coupled"]
    m = _gpt(True)
    m.transformer.wte.weight.requires_grad_(False)
    with pytest.raises(ValueError, match="trainable matrix to couple"):
        configure_optimizer(m, "coupled_adam")


# -----------------------------------------------------------------------------
# schedules

def test_get_lr_cosine_wsd_constant_at_key_iterations():
    kw = dict(learning_rate=1.0, min_lr=0.1, warmup_iters=10, lr_decay_iters=110, max_iters=110)
    for schedule in ("cosine", "wsd", "constant"):
        assert get_lr(0, schedule, **kw) == pytest.approx(1 / 11)  # nanoGPT warmup lr * (it+1)/(warmup+1)
        assert get_lr(9, schedule, **kw) == pytest.approx(10 / 11)
        assert get_lr(10, schedule, **kw) == pytest.approx(1.0)
    assert get_lr(60, "cosine", **kw) == pytest.approx(0.55)  # halfway: min + (max - min) / 2
    assert get_lr(35, "cosine", **kw) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 4)))
    assert get_lr(110, "cosine", **kw) == pytest.approx(0.1)
    assert get_lr(500, "cosine", **kw) == pytest.approx(0.1)
    # wsd: decay over the last 20% of 110 = 22 iterations, starting at 88
    assert get_lr(87, "wsd", **kw) == 1.0
    assert get_lr(88, "wsd", **kw) == 1.0
    assert get_lr(99, "wsd", **kw) == pytest.approx(1.0 - 0.9 * 11 / 22)
    assert get_lr(110, "wsd", **kw) == pytest.approx(0.1)
    assert get_lr(120, "wsd", **kw) == pytest.approx(0.1)
    assert get_lr(100, "wsd", **dict(kw, wsd_decay_frac=0.5)) == pytest.approx(1.0 - 0.9 * 45 / 55)
    assert get_lr(10_000, "constant", **kw) == 1.0


def test_get_lr_bad_input():
    with pytest.raises(ValueError, match="unknown schedule 'linear'"):
        get_lr(50, "linear")
    with pytest.raises(ValueError, match="lr_decay_iters"):
        get_lr(0, "cosine", warmup_iters=10, lr_decay_iters=10)
    with pytest.raises(ValueError, match="wsd_decay_frac"):
        get_lr(0, "wsd", warmup_iters=10, max_iters=100, wsd_decay_frac=0.95)


def test_mu_centering_zeroes_mu_and_keeps_softmax():
    g = torch.Generator().manual_seed(0)
    W = nn.Parameter(torch.randn(30, 6, generator=g, dtype=torch.float64) + 5.0)
    h = torch.randn(10, 6, generator=g, dtype=torch.float64)
    p_before = torch.softmax(h @ W.detach().T, dim=-1)
    # after an optimizer step, as in the OEC training loop
    (h @ W.T).logsumexp(-1).sum().backward()
    torch.optim.SGD([W], lr=0.1).step()
    p_before = torch.softmax(h @ W.detach().T, dim=-1)
    data_ptr = W.data_ptr()
    mu_centering_(W)
    assert W.data_ptr() == data_ptr and W.grad_fn is None  # in place, no autograd
    assert W.detach().mean(0).norm().item() < 1e-12
    torch.testing.assert_close(torch.softmax(h @ W.detach().T, dim=-1), p_before, atol=1e-14, rtol=1e-12)


def _oec_gpt(dtype=torch.float64):
    from model import GPT, GPTConfig
    torch.manual_seed(0)
    cfg = GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=97, pos="rope", mlp="swiglu",
                    qk_norm=True, tie_embeddings=False, init="xavier", bias=False)
    return GPT(cfg).to(dtype)


def test_gauge_shift_sets_the_mean_logit_and_leaves_the_exact_loss_and_gradients_unchanged():
    """The OEC mechanism check's shift (config/oec_mechanism.py): mu.h_bar reaches the target, and in float64 the
    cross-entropy and every gradient are unchanged (a gauge change); in bf16 autocast the same weights lose
    nats, because the logits near 1000 are rounded in steps of 4-8."""
    model = _oec_gpt()
    x = torch.randint(0, 97, (4, 16), generator=torch.Generator().manual_seed(1))
    y = torch.roll(x, -1, dims=1)

    def loss_and_grads():
        model.zero_grad()
        loss, _ = model(x, targets=y)
        loss.backward()
        return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters()}

    loss0, grads0 = loss_and_grads()
    with torch.no_grad():
        h_bar = model.hidden_states(x).mean(dim=(0, 1))  # (C,)
        logits0 = model(x)
    W = model.output_embedding()
    c = gauge_shift_(W, h_bar, 1000.0)
    with torch.no_grad():
        logits1 = model(x)
    assert (W.mean(0) @ h_bar).item() == pytest.approx(1000.0, rel=1e-12)
    assert logits1.mean().item() == pytest.approx(1000.0, rel=1e-9)  # mean over tokens and vocabulary
    shift = (logits1 - logits0)  # (B,T,V): c . h_t, the same for every vocabulary entry of a token
    torch.testing.assert_close(shift, shift[..., :1].expand_as(shift), rtol=0, atol=1e-9)
    assert c.norm() > 100  # not a tiny move: the mean logit went from ~0 to 1000
    loss1, grads1 = loss_and_grads()
    assert loss1 == pytest.approx(loss0, abs=1e-9)
    for n in grads0:
        torch.testing.assert_close(grads1[n], grads0[n], rtol=1e-6, atol=1e-9, msg=n)
    m32 = _oec_gpt(torch.float32)  # the same init in fp32, shifted the same way, then bf16 autocast
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        bf16_before = m32(x, targets=y)[0].item()
    gauge_shift_(m32.output_embedding(), h_bar.float(), 1000.0)
    with torch.no_grad():
        fp32_after = m32(x, targets=y)[0].item()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16_after = m32(x, targets=y)[0].item()
    assert abs(bf16_before - loss0) < 0.05 and abs(fp32_after - loss0) < 0.01
    assert bf16_after - loss0 > 0.5, (bf16_after, loss0)


def test_gauge_shift_refuses_a_zero_mean_hidden_state():
    W = torch.randn(5, 3)
    with pytest.raises(ValueError, match="mean hidden state has squared norm 0"):
        gauge_shift_(W, torch.zeros(3), 10.0)


# -----------------------------------------------------------------------------
# NER adaptive fine-tuning (Stollenwerk 2022, arXiv:2202.02617; nerblackbox callbacks/custom_early_stopping.py)


@pytest.mark.parametrize("config,rule", [("config/coupled_adam.py", "coupled_adam_code"),
                                         ("config/norm_ablation.py", "nanogpt"),
                                         ("config/oec_lr_sweep.py", "nanogpt")])
def test_paper_configs_reproduce_their_papers_grouping(monkeypatch, config, rule):
    """Each paper config, built as train.py builds it (its keys over train.py's defaults), gives that
    codebase's weight-decay groups: Coupled Adam code (wte undecayed, wpe decayed), DyISRU and OEC code
    (nanoGPT: every >= 2-D weight)."""
    from pathlib import Path

    from configurator import read_config_file, script_defaults
    from model import GPT, GPTConfig
    root = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(root)  # configs exec() each other by relative path
    cfg = {**script_defaults(str(root / "train.py")), **read_config_file(config)}
    keys = {f for f in GPTConfig.__dataclass_fields__} - {"vocab_size"}
    m = GPT(GPTConfig(**{k: cfg[k] for k in keys if k in cfg}, vocab_size=64))
    optimizers = cfg.get("sweep", {}).get("optimizer", [cfg["optimizer"]])
    for optimizer in optimizers:
        opt = configure_optimizer(m, optimizer, weight_decay=0.1, decay_token_embedding=cfg["decay_token_embedding"],
                                  coupled_adam_embedding=cfg["coupled_adam_embedding"])
        flat = [(names, wd) for names, wd, _ in _named_groups(m, opt) if names]
        if rule == "nanogpt":
            decay, no_decay = _nanogpt_rule(m)
            assert flat == [(decay, 0.1), (no_decay, 0.0)]
        else:
            decay, no_decay, emb = _coupled_adam_code_rule(m)
            assert {frozenset(n) for n, wd in flat if wd == 0.1} == {frozenset(decay)}
            assert set().union(*[n for n, wd in flat if wd == 0.0]) == no_decay | emb


def test_get_lr_defaults_are_nanogpts():
    """Defaults: warmup 2000, cosine to min_lr at 600000, max_iters 600000 (wsd decays over the last 20%)."""
    from optim import get_lr

    assert get_lr(1999) == pytest.approx(6e-4 * 2000 / 2001)
    assert get_lr(2000) == 6e-4
    assert get_lr(600_000) == pytest.approx(6e-5, abs=1e-15) and get_lr(599_999) > 6e-5
    assert get_lr(480_000, 'wsd') == 6e-4 and get_lr(480_001, 'wsd') == pytest.approx(6e-4 - 5.4e-4 / 120_000)


def test_get_lr_wsd_validation_boundaries():
    from optim import get_lr

    for frac in (-0.1, 0.01):  # a negative fraction; a fraction that rounds to no decay step (10 iterations)
        with pytest.raises(ValueError, match="wsd_decay_frac"):
            get_lr(0, 'wsd', warmup_iters=0, max_iters=10, wsd_decay_frac=frac)
    # allowed at the boundaries: decay over all iterations; decay starting right at the end of warmup
    assert get_lr(0, 'wsd', 1.0, 0.0, warmup_iters=0, max_iters=10, wsd_decay_frac=1.0) == 1.0
    assert get_lr(5, 'wsd', 1.0, 0.0, warmup_iters=5, max_iters=10, wsd_decay_frac=0.5) == 1.0


def _adam_pair(seed: int = 0, **kw):
    """A (4, 3) embedding-like and a (3,) parameter with fixed gradients; CoupledAdam(coupled=False) and
    torch.optim.AdamW on equal copies (coupled=False is AdamW exactly)."""
    g = torch.Generator().manual_seed(seed)
    ws = [torch.randn(4, 3, generator=g), torch.randn(3, generator=g)]
    grads = [torch.randn(4, 3, generator=g), torch.randn(3, generator=g)]
    a = [w.clone().requires_grad_() for w in ws]
    b = [w.clone().requires_grad_() for w in ws]
    for p, q, gr in zip(a, b, grads):
        p.grad, q.grad = gr.clone(), gr.clone()
    return a, b, CoupledAdam(a, coupled=False, **kw), torch.optim.AdamW(b, **({"lr": 1e-3, "betas": (0.9, 0.95),
                                                                             "eps": 1e-8, "weight_decay": 0.0} | kw))


def test_coupled_adam_defaults_are_adamws_with_betas_0_9_0_95():
    """Defaults lr 1e-3, eps 1e-8, weight_decay 0, avg_scale 1 (kills the default-value mutants): the same step
    as AdamW(lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0); eps matters with tiny gradients."""
    a, b, ours, ref = _adam_pair()
    for p in a + b:
        p.grad.mul_(1e-7)  # |g| ~ eps: an eps of 1.0 instead of 1e-8 changes the step by orders of magnitude
    ours.step()
    ref.step()
    for p, q in zip(a, b):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-7)
    assert CoupledAdam([torch.zeros(2, 2, requires_grad=True)]).defaults["avg_scale"] == 1.0
    # avg_scale's default is 1: a coupled step with the default equals one with avg_scale=1.0 given explicitly
    w = torch.randn(5, 3, generator=torch.Generator().manual_seed(1))
    grad = torch.randn(5, 3, generator=torch.Generator().manual_seed(2))
    outs = []
    for kw in ({}, {"avg_scale": 1.0}, {"avg_scale": 2.0}):
        p = w.clone().requires_grad_()
        p.grad = grad.clone()
        CoupledAdam([p], **kw).step()
        outs.append(p.detach())
    assert torch.equal(outs[0], outs[1]) and not torch.equal(outs[0], outs[2])


def test_coupled_adam_weight_decay_one_is_applied():
    """weight_decay=1.0 is a decay like any other (kills `if wd != 1`)."""
    import torch
    a, b, ours, ref = _adam_pair(weight_decay=1.0, lr=0.1)
    ours.step()
    ref.step()
    for p, q in zip(a, b):
        torch.testing.assert_close(p, q)


def test_coupled_adam_checks_each_hyper_parameter_alone_at_its_boundary():
    """Each bad value alone raises, with the message; boundary values lr=0, eps=0, beta=0 are valid, beta=1 and
    avg_scale=0 are not (kills the `and`/`<=`/`< 2` mutants of the check)."""
    p = [torch.zeros(2, 2, requires_grad=True)]
    for ok in (dict(lr=0.0), dict(eps=0.0), dict(betas=(0.0, 0.0)), dict(weight_decay=0.0)):
        CoupledAdam(p, **ok)
    for bad in (dict(lr=-1e-3), dict(eps=-1e-8), dict(weight_decay=-0.1), dict(avg_scale=0.0),
                dict(avg_scale=-1.0), dict(betas=(1.0, 0.95)), dict(betas=(0.9, 1.0)), dict(betas=(0.9, 1.5)),
                dict(betas=(-0.1, 0.95))):
        with pytest.raises(ValueError, match=r"CoupledAdam: invalid .*need lr, eps, wd >= 0"):
            CoupledAdam(p, **bad)


def test_coupled_adam_step_returns_the_closures_loss_and_refuses_sparse_gradients():
    p = torch.ones(3, 2, requires_grad=True)
    opt = CoupledAdam([p])
    assert opt.step() is None  # no gradient yet, no closure: nothing to return

    def closure():
        opt.zero_grad()
        loss = (p ** 2).sum()
        loss.backward()
        return loss
    assert opt.step(closure).item() == 6.0
    emb = torch.nn.Embedding(4, 2, sparse=True)
    emb(torch.tensor([1])).sum().backward()
    with pytest.raises(RuntimeError, match=r"^CoupledAdam does not support sparse gradients \(use a dense"):
        CoupledAdam(emb.parameters()).step()


@pytest.mark.parametrize("fused", [False, True])
def test_guarded_step_steps_only_where_ok_and_clears_gradients(fused):
    """ok=False leaves weights and optimizer state untouched (fused AdamW through found_inf, others by reading ok
    back); ok=True is a plain step; gradients are cleared to None either way."""
    w0 = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    grad = torch.randn(4, 3, generator=torch.Generator().manual_seed(1))
    ref = w0.clone().requires_grad_()
    ref.grad = grad.clone()
    torch.optim.AdamW([ref], lr=0.1).step()
    p = w0.clone().requires_grad_()
    opt = torch.optim.AdamW([p], lr=0.1, fused=fused)
    p.grad = grad.clone()
    guarded_step(opt, torch.tensor(False))
    assert torch.equal(p.detach(), w0) and p.grad is None
    assert not opt.state[p] or opt.state[p]["step"].item() == 0  # no step counted
    p.grad = grad.clone()
    guarded_step(opt, torch.tensor(True))
    torch.testing.assert_close(p.detach(), ref.detach())
    assert p.grad is None and opt.state[p]["step"].item() == 1


def test_mu_centering_where_centres_only_where_ok():
    w = torch.randn(6, 4, generator=torch.Generator().manual_seed(0)) + 3.0
    kept = w.clone()
    mu_centering_where_(kept, torch.tensor(False))
    assert torch.equal(kept, w)  # bitwise untouched
    centred, ref = w.clone(), w.clone()
    mu_centering_where_(centred, torch.tensor(True))
    mu_centering_(ref)
    assert torch.equal(centred, ref)
    torch.testing.assert_close(centred.mean(dim=0), torch.zeros(4), rtol=0, atol=1e-6)
    assert centred.shape == (6, 4) and not torch.equal(centred[0], centred[1])  # per column, not one scalar


class _NoHostRead(torch.Tensor):
    """A 0-dim bool tensor whose value may not be read back on the host (bool(t) raises)."""

    def __bool__(self):
        raise AssertionError("guarded_step read the step flag back on the host")


def test_guarded_step_with_fused_adamw_never_reads_the_flag_back():
    """Fused AdamW skips on the device through found_inf: no host sync per step (kills the mutants that miss
    the 'fused' default and fall back to bool(ok)); a non-fused optimizer must read it back."""
    p = torch.randn(3, 2, requires_grad=True)
    w0 = p.detach().clone()
    opt = torch.optim.AdamW([p], lr=0.1, fused=True)
    p.grad = torch.randn(3, 2)
    guarded_step(opt, torch.tensor(False).as_subclass(_NoHostRead))
    assert torch.equal(p.detach(), w0)
    p.grad = torch.randn(3, 2)
    guarded_step(opt, torch.tensor(True).as_subclass(_NoHostRead))
    assert not torch.equal(p.detach(), w0)
    p.grad = torch.randn(3, 2)
    with pytest.raises(AssertionError, match="read the step flag back"):
        guarded_step(torch.optim.AdamW([p], lr=0.1), torch.tensor(True).as_subclass(_NoHostRead))


def _tiny_gpt():
    from model import GPT, GPTConfig
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=17, block_size=6, n_layer=1, n_head=2, n_embd=8, bias=True))


def test_configure_optimizer_defaults_and_arguments_reach_the_optimizer():
    """Defaults: torch AdamW, lr 6e-4, weight decay 0.1 on >= 2-D parameters, not fused, torch's default foreach
    (CPU); on CUDA fused without foreach. lr, betas and eps reach AdamW and CoupledAdam; avg_scale defaults to 1."""
    opt = configure_optimizer(_tiny_gpt())
    assert type(opt) is torch.optim.AdamW
    assert opt.defaults["lr"] == 6e-4 and {g["weight_decay"] for g in opt.param_groups} == {0.1, 0.0}
    assert not opt.defaults["fused"] and opt.defaults["foreach"] is None
    cuda = configure_optimizer(_tiny_gpt(), device_type="cuda")  # CPU tensors: only the flags are checked
    assert cuda.defaults["fused"] is True and cuda.defaults["foreach"] is False
    for name, kind in (("adamw", torch.optim.AdamW), ("coupled_adam", CoupledAdam)):
        o = configure_optimizer(_tiny_gpt(), name, learning_rate=3e-3, betas=(0.8, 0.9), eps=1e-6)
        assert type(o) is kind
        assert all((g["lr"], g["betas"], g["eps"]) == (3e-3, (0.8, 0.9), 1e-6) for g in o.param_groups)
    assert configure_optimizer(_tiny_gpt(), "coupled_adam").defaults["avg_scale"] == 1.0


def test_configure_optimizer_messages_say_the_fix():
    with pytest.raises(ValueError, match=r"use --coupled_adam_embedding=output \(lm_head, the paper's matrix\) or "
                                         r"=input \(wte\)$"):
        configure_optimizer(_tiny_gpt(), "coupled_adam", coupled_adam_embedding="both")
    with pytest.raises(ValueError, match=r"needs a trainable matrix to couple \(model\.output_embedding\(\) for "
                                         r"'output', model\.transformer\.wte\.weight for 'input'\); this model has "
                                         r"none: use --optimizer=adamw$"):
        configure_optimizer(torch.nn.Linear(3, 3), "coupled_adam")


def test_get_lr_wsd_message_names_the_valid_range():
    with pytest.raises(ValueError, match=r"use 0 < wsd_decay_frac <= 1 - warmup_iters / max_iters$"):
        get_lr(0, "wsd", warmup_iters=10, max_iters=100, wsd_decay_frac=0.0)
