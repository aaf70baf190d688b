"""losses.py: each term against torch.nn.functional or a direct recomputation; diagnostics on constructed
embeddings whose answers are known."""
import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from losses import (
    IGNORE_INDEX,
    compute_loss,
    cross_entropy,
    embedding_diagnostics,
    hidden_diagnostics,
    logit_diagnostics,
    mu_loss,
    softcap,
    unigram_log_probs,
    z_loss,
)


def _random_batch(B=3, T=5, V=11, seed=0, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, T, V, generator=g, dtype=torch.float64) * scale
    targets = torch.randint(0, V, (B, T), generator=g)
    targets[0, :2] = IGNORE_INDEX
    targets[-1, -1] = IGNORE_INDEX
    return logits, targets


def test_cross_entropy_matches_torch_with_ignored_targets():
    logits, targets = _random_batch()
    ref = F.cross_entropy(logits.view(-1, 11), targets.view(-1), ignore_index=-100)
    torch.testing.assert_close(cross_entropy(logits, targets), ref)
    # and against the definition: mean over kept tokens of -log softmax(l)_t
    keep = targets.view(-1) != IGNORE_INDEX
    lp = logits.view(-1, 11).log_softmax(-1)[keep]
    direct = -lp.gather(1, targets.view(-1)[keep, None]).mean()
    torch.testing.assert_close(cross_entropy(logits.view(-1, 11), targets.view(-1)), direct)


def test_z_loss_matches_logsumexp_and_direct_formula():
    logits, targets = _random_batch()
    mask = targets != IGNORE_INDEX
    ref = (torch.logsumexp(logits, -1)[mask] ** 2).mean()
    direct = torch.stack([math.log(sum(math.exp(x) for x in row.tolist())) ** 2 * torch.ones(())
                          for row in logits[mask]]).mean()
    torch.testing.assert_close(z_loss(logits, mask).double(), ref, rtol=1e-6, atol=0)
    torch.testing.assert_close(z_loss(logits, mask).double(), direct.double(), rtol=1e-6, atol=0)
    torch.testing.assert_close(z_loss(logits).double(), (torch.logsumexp(logits, -1) ** 2).mean(),
                               rtol=1e-6, atol=0)


def test_z_loss_is_fp32_on_bf16_logits():
    logits, _ = _random_batch(scale=30.0)
    out = z_loss(logits.bfloat16())
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), (torch.logsumexp(logits.bfloat16().double(), -1) ** 2).mean(),
                               rtol=1e-5, atol=0)


def test_mu_loss_and_softcap_direct():
    W = torch.randn(7, 4, dtype=torch.float64)
    mu = [sum(W[i, j].item() for i in range(7)) / 7 for j in range(4)]
    assert mu_loss(W).item() == pytest.approx(sum(m * m for m in mu), rel=1e-12)
    x = torch.linspace(-100, 100, 21, dtype=torch.float64)
    torch.testing.assert_close(softcap(x, 30.0), 30.0 * torch.tanh(x / 30.0))
    assert softcap(x, 30.0).abs().max() < 30.0
    torch.testing.assert_close(softcap(torch.tensor([1e-3]), 30.0), torch.tensor([1e-3]), rtol=1e-6, atol=0)


def test_compute_loss_sum_and_terms_with_gradients():
    logits, targets = _random_batch()
    logits.requires_grad_(True)
    W = torch.randn(11, 6, dtype=torch.float64, requires_grad=True)
    total, terms = compute_loss(logits, targets, output_embedding=W, z_loss=1e-2, mu_loss=0.5)
    assert set(terms) == {"ce", "z_loss", "mu_loss"}
    mask = targets != IGNORE_INDEX
    ce = F.cross_entropy(logits.view(-1, 11), targets.view(-1))
    zl = (torch.logsumexp(logits, -1)[mask] ** 2).mean()
    ml = W.mean(0).pow(2).sum()
    ref = ce + 1e-2 * zl + 0.5 * ml
    torch.testing.assert_close(total, ref)
    for k, v in (("ce", ce), ("z_loss", zl), ("mu_loss", ml)):
        torch.testing.assert_close(terms[k].double(), v.detach().double(), rtol=1e-6, atol=0)
        assert not terms[k].requires_grad
    total.backward()
    g_logits, g_w = torch.autograd.grad(ref, (logits, W))
    torch.testing.assert_close(logits.grad, g_logits)
    torch.testing.assert_close(W.grad, g_w)
    # only the enabled terms are returned
    logits.grad = None
    total, terms = compute_loss(logits, targets)
    assert set(terms) == {"ce"}
    torch.testing.assert_close(total, cross_entropy(logits, targets))
    total.backward()
    torch.testing.assert_close(logits.grad, torch.autograd.grad(cross_entropy(logits, targets), logits)[0])
    all_ignored = torch.full_like(targets, IGNORE_INDEX)
    assert compute_loss(logits, all_ignored)[0].item() == 0.0
    _, terms = compute_loss(logits, targets, z_loss=1e-4)
    assert set(terms) == {"ce", "z_loss"}


def test_fused_ce_z_loss_gradcheck_and_bf16():
    from losses import _CrossEntropyZLoss
    logits, targets = _random_batch(B=2, T=3, V=5, seed=4)
    lg = logits.view(-1, 5).requires_grad_(True)
    torch.autograd.gradcheck(lambda x: _CrossEntropyZLoss.apply(x, targets.view(-1), IGNORE_INDEX), (lg,))
    # bf16 logits (autocast): computed in fp32, gradient comes back in bf16
    lb = logits.bfloat16().requires_grad_(True)
    total, terms = compute_loss(lb, targets, z_loss=0.1)
    total.backward()
    lf = lb.detach().double().requires_grad_(True)
    ref = F.cross_entropy(lf.view(-1, 5), targets.view(-1)) + 0.1 * z_loss(lf, targets != IGNORE_INDEX)
    ref.backward()
    assert lb.grad.dtype == torch.bfloat16
    torch.testing.assert_close(total.double(), ref.detach(), rtol=1e-5, atol=0)
    torch.testing.assert_close(lb.grad.double(), lf.grad, rtol=1e-2, atol=1e-4)


def test_compute_loss_bad_input():
    logits, targets = _random_batch()
    with pytest.raises(ValueError, match="z_loss=-0.1"):
        compute_loss(logits, targets, z_loss=-0.1)
    with pytest.raises(ValueError, match=">= 0"):
        compute_loss(logits, targets, output_embedding=torch.zeros(11, 2), mu_loss=-1.0)
    with pytest.raises(ValueError, match="output_embedding"):
        compute_loss(logits, targets, mu_loss=1e-4)


def test_logit_diagnostics_against_direct_computation():
    logits, targets = _random_batch(B=3, T=4, V=9, seed=3)
    logits[1, 2] += 50.0  # one shifted token changes every statistic
    d = logit_diagnostics(logits, targets)
    assert set(d) == {"logits_mean_mean", "logits_mean_std", "logits_mean_absmax", "mean_logsqZ"}
    rows = [logits[b, t].tolist() for b in range(3) for t in range(4) if targets[b, t] != IGNORE_INDEX]
    means = [sum(r) / len(r) for r in rows]
    stds = [math.sqrt(sum((x - m) ** 2 for x in r) / (len(r) - 1)) for r, m in zip(rows, means)]
    absmax = [max(abs(x) for x in r) for r in rows]
    lsq = [math.log(sum(math.exp(x) for x in r)) ** 2 for r in rows]
    n = len(rows)
    assert d["logits_mean_mean"] == pytest.approx(sum(means) / n, rel=1e-5)
    assert d["logits_mean_std"] == pytest.approx(sum(stds) / n, rel=1e-5)
    assert d["logits_mean_absmax"] == pytest.approx(sum(absmax) / n, rel=1e-5)
    assert d["mean_logsqZ"] == pytest.approx(sum(lsq) / n, rel=1e-5)
    assert logit_diagnostics(logits)["logits_mean_mean"] == pytest.approx(logits.mean().item(), rel=1e-5)


def test_hidden_diagnostics_by_hand():
    """|h_bar|, mu.h_bar, cos(mu, h_bar), mean ||h|| on numbers worked out by hand; ignored targets drop tokens;
    mu.h_bar is the mean logit (over vocabulary and tokens) of E h."""
    h = torch.tensor([[[1.0, 0.0], [3.0, 2.0]]])  # (B=1, T=2, H=2): h_bar = (2, 1)
    E = torch.tensor([[1.0, 1.0], [3.0, -1.0]])  # (V=2, H=2): mu = (2, 0)
    d = hidden_diagnostics(h, E)
    assert set(d) == {"h_bar_norm", "fhs_dot_prod", "fhs_cos_sim", "mean_norm_h"}
    assert d["h_bar_norm"] == pytest.approx(math.sqrt(5))
    assert d["fhs_dot_prod"] == pytest.approx(4.0)  # 2*2 + 0*1
    assert d["fhs_cos_sim"] == pytest.approx(4 / (2 * math.sqrt(5)))
    assert d["mean_norm_h"] == pytest.approx((1 + math.sqrt(13)) / 2)
    assert d["fhs_dot_prod"] == pytest.approx(logit_diagnostics(h @ E.T)["logits_mean_mean"])
    only_first = hidden_diagnostics(h, E, torch.tensor([[5, IGNORE_INDEX]]))
    assert (only_first["h_bar_norm"], only_first["fhs_dot_prod"], only_first["fhs_cos_sim"]) == (1.0, 2.0, 1.0)
    centered = hidden_diagnostics(h, E - E.mean(0))  # mu = 0: no mean logit, cos defined as 0
    assert (centered["fhs_dot_prod"], centered["fhs_cos_sim"]) == (0.0, 0.0)
    with pytest.raises(ValueError, match="every target is IGNORE_INDEX"):
        hidden_diagnostics(h, E, torch.full((1, 2), IGNORE_INDEX))


def _naive_isotropy(E: np.ndarray, both_signs: bool = False) -> float:
    """The authors' formula (OEC and Coupled Adam repos, nanoGPT/analysis/isotropy.py, transcribed): the
    eigenvectors of E^T E as np.linalg.eig returns them, np.exp (overflows for big norms), min Z / max Z."""
    _, vecs = np.linalg.eig(E.T @ E)
    if both_signs:
        vecs = np.concatenate([vecs, -vecs], axis=1)
    z = [np.exp(E @ vecs[:, i]).sum() for i in range(vecs.shape[1])]
    return float(min(z) / max(z))


def test_isotropy_is_the_authors_and_signfree_is_separate():
    """`isotropy` = the published formula (one sign per eigenvector, as numpy's eig returns it);
    `isotropy_signfree` = min/max over both signs, a different and smaller number on a shifted embedding."""
    g = torch.Generator().manual_seed(0)
    E = torch.randn(200, 8, generator=g, dtype=torch.float64) * 0.7 + torch.linspace(-0.3, 0.3, 8)
    d = embedding_diagnostics(E)
    authors = _naive_isotropy(E.float().numpy())  # their embeddings are fp32 numpy arrays
    assert d["isotropy"] == pytest.approx(authors, rel=1e-5)
    assert d["isotropy_signfree"] == pytest.approx(_naive_isotropy(E.numpy(), both_signs=True), rel=1e-6)
    assert d["isotropy_signfree"] < 0.9 * d["isotropy"]  # the two differ here: the names must not be swapped
    # an OEC-like output embedding: a common shift much larger than the spread (||mu|| / row norm ~ 0.8)
    E = torch.randn(4000, 32, generator=g) * 0.05 + 0.03
    d = embedding_diagnostics(E)
    assert d["isotropy"] == pytest.approx(_naive_isotropy(E.numpy()), rel=1e-4)
    assert d["isotropy_signfree"] == pytest.approx(_naive_isotropy(E.numpy(), both_signs=True), rel=1e-4)
    # isotropic: many gaussian rows -> Z(c) nearly the same in every eigen-direction
    iso = embedding_diagnostics(torch.randn(20000, 16, generator=g) * 0.1)
    assert 0.99 < iso["isotropy_signfree"] <= iso["isotropy"] <= 1.0
    # every row shifted by a big common vector (norms ~1e3): anisotropic, and still finite
    shift = torch.randn(16, generator=g)
    E_big = torch.randn(20000, 16, generator=g) * 0.1 + 1e3 * shift / shift.norm()
    with np.errstate(over="ignore", invalid="ignore"):
        naive = _naive_isotropy(E_big.double().numpy())
    assert not 0 < naive < 1  # the authors' version overflows (nan/0): ours must not
    d = embedding_diagnostics(E_big)
    assert all(math.isfinite(v) for v in d.values())
    assert 0.0 <= d["isotropy"] < 1e-6 and 0.0 <= d["isotropy_signfree"] < 1e-6
    assert d["mu_ratio"] == pytest.approx(1.0, abs=1e-3)
    E_big[3, 2] = math.inf  # diverged weights: NaN diagnostics, no exception from numpy's eig
    d = embedding_diagnostics(E_big)
    assert math.isnan(d["isotropy"]) and math.isnan(d["smin_smax"])


def test_mu_norm_ratio_and_singular_values_on_known_case():
    # rows m + r*v and m - r*v with v orthogonal to m: mu = m, every row norm = sqrt(|m|^2 + r^2)
    m = torch.tensor([3.0, 0.0, 0.0, 0.0])
    v = torch.tensor([0.0, 1.0, 0.0, 0.0])
    E = torch.stack([m + 4 * v, m - 4 * v] * 50)
    d = embedding_diagnostics(E)
    assert d["mu_norm"] == pytest.approx(3.0, rel=1e-6)
    assert d["mean_row_norm"] == pytest.approx(5.0, rel=1e-6)
    assert d["mu_ratio"] == pytest.approx(0.6, rel=1e-6)
    # singular values: E = U diag(s) Q^T with known s
    g = torch.Generator().manual_seed(1)
    U, _ = torch.linalg.qr(torch.randn(300, 6, generator=g, dtype=torch.float64))
    Q, _ = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=torch.float64))
    s = torch.tensor([10.0, 7.0, 5.0, 2.0, 1.0, 0.05], dtype=torch.float64)
    d = embedding_diagnostics(U @ torch.diag(s) @ Q.T)
    assert d["smin_smax"] == pytest.approx(0.005, rel=1e-4)
    ref = torch.linalg.svdvals(U @ torch.diag(s) @ Q.T)
    assert d["smin_smax"] == pytest.approx((ref[-1] / ref[0]).item(), rel=1e-4)


def test_unigram_correlations_as_the_authors_compute_them():
    """corr_emu_logfreq etc. = the Coupled Adam code's corr_p/corr_s(Emu, lbp), corr_p(norm, lbp): scipy over
    ALL rows with lbp = log(p + 1e-10) (analysis/lbp.py), unseen and padded rows included at the floor;
    corr_emu_logfreq_seen = Pearson over the seen tokens only."""
    scipy_stats = pytest.importorskip("scipy.stats")
    g = torch.Generator().manual_seed(2)
    V, H = 500, 8
    tokens = np.random.default_rng(0).zipf(1.5, size=200_000) % (V - 20)  # ids >= V-20 never occur
    logp = unigram_log_probs(tokens, V)
    counts = np.bincount(tokens, minlength=V)
    assert np.isneginf(logp[V - 20:].numpy()).all()
    np.testing.assert_allclose(logp[:V - 20].exp().sum().item(), 1.0, rtol=1e-12)
    np.testing.assert_allclose(logp[5].item(), math.log(counts[5] / counts.sum()))
    E = torch.randn(V, H, generator=g) + 0.3
    E[V - 20:] += 2.0  # unseen rows drift together (as under Adam): the floor makes them count
    d = embedding_diagnostics(E, logp)
    En = E.numpy()
    emu = En @ En.mean(0)
    lbp = np.log(counts / counts.sum() + 1e-10)  # the authors' bp += 10**-10; lbp = np.log(bp)
    assert d["corr_emu_logfreq"] == pytest.approx(scipy_stats.pearsonr(emu, lbp).statistic, abs=1e-6)
    assert d["corr_emu_logfreq_spearman"] == pytest.approx(scipy_stats.spearmanr(emu, lbp).statistic, abs=1e-6)
    norms = np.linalg.norm(En, axis=1)
    assert d["corr_norm_logfreq"] == pytest.approx(scipy_stats.pearsonr(norms, lbp).statistic, abs=1e-6)
    seen = counts > 0
    ref_seen = scipy_stats.pearsonr(emu[seen], np.log(counts[seen] / counts.sum())).statistic
    assert d["corr_emu_logfreq_seen"] == pytest.approx(ref_seen, abs=1e-6)
    assert abs(d["corr_emu_logfreq"] - d["corr_emu_logfreq_seen"]) > 0.05  # the unseen rows matter here
    # ties (many rows at the floor, repeated counts) get average ranks, as scipy's spearmanr
    few = unigram_log_probs(np.array([0, 0, 1, 1, 2]), 6)
    E6 = torch.randn(6, 3, generator=g)
    lbp6 = np.log(np.bincount([0, 0, 1, 1, 2], minlength=6) / 5 + 1e-10)
    emu6 = E6.numpy() @ E6.numpy().mean(0)
    assert embedding_diagnostics(E6, few)["corr_emu_logfreq_spearman"] == pytest.approx(
        scipy_stats.spearmanr(emu6, lbp6).statistic, abs=1e-9)
    assert "corr_emu_logfreq" not in embedding_diagnostics(E)


def test_unigram_and_diagnostics_bad_input():
    with pytest.raises(ValueError, match="vocab_size"):
        unigram_log_probs(np.array([1, 2, 70]), 50)
    with pytest.raises(ValueError, match="shape"):
        embedding_diagnostics(torch.randn(10, 3), torch.zeros(9))
    with pytest.raises(ValueError, match="IGNORE_INDEX"):
        logit_diagnostics(torch.randn(2, 3), torch.full((2,), IGNORE_INDEX))


def _allocations(prof) -> list[int]:
    """Sizes in bytes of every CPU allocation the profiler (profile_memory=True) recorded, freed or not."""
    sizes, todo = [], list(prof.profiler.kineto_results.experimental_event_tree())
    while todo:
        node = todo.pop()
        size = getattr(node.extra_fields, "alloc_size", 0)
        sizes += [size] if size > 0 else []
        todo += node.children
    return sizes


def _ce_z_reference(logits, t, z):
    """F.cross_entropy + z * mean(logsumexp^2) by autograd, fp32, the reference for the fused backward."""
    lg = logits.float()
    keep = t != -100
    return F.cross_entropy(lg, t) + z * torch.logsumexp(lg[keep], dim=-1).square().mean()


def _profiled_backward(fn, logits, t):
    from torch.profiler import ProfilerActivity, profile
    loss = fn(logits, t)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        loss.backward()
    return _allocations(prof)


def test_fused_ce_z_loss_backward_allocates_only_the_gradient_eager():
    """Eager backward: the one (N,V) fp32 buffer is the gradient itself (exp in place, scale in place, the one-hot
    term scattered in place), and the gradient equals F.cross_entropy's + the z-loss's by autograd."""
    N, V = 64, 3001
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(N, V, generator=g).requires_grad_()
    t = torch.randint(0, V, (N,), generator=g)
    t[:3] = -100
    sizes = _profiled_backward(lambda lg, tt: compute_loss(lg, tt, z_loss=1e-2)[0], logits, t)
    assert sum(s >= N * V * 4 for s in sizes) == 1, sorted(sizes)[-4:]
    ref = logits.detach().clone().requires_grad_()
    _ce_z_reference(ref, t, 1e-2).backward()
    torch.testing.assert_close(logits.grad, ref.grad, rtol=1e-5, atol=1e-7)


@pytest.mark.slow
def test_fused_ce_z_loss_compiled_backward_writes_no_fp32_buffer():
    """torch.compile (inductor, here its CPU backend; the same fusion decides the CUDA kernels): the backward of
    bf16 logits writes one (N,V) bf16 gradient and no fp32 (N,V) buffer (the scatter_add_ form made inductor
    realise one, then cast it: 6 bytes per logit more traffic). Gradients equal the autograd reference."""
    N, V = 128, 2003
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(N, V, generator=g).bfloat16().requires_grad_()
    t = torch.randint(0, V, (N,), generator=g)
    t[:5] = -100
    fn = torch.compile(lambda lg, tt: compute_loss(lg, tt, z_loss=1e-2)[0], fullgraph=True)
    fn(logits, t).backward()  # compiles
    logits.grad = None
    sizes = _profiled_backward(fn, logits, t)
    assert not any(s >= N * V * 4 for s in sizes), sorted(sizes)[-4:]
    assert sum(s == N * V * 2 for s in sizes) == 1  # the bf16 gradient
    ref = logits.detach().clone().requires_grad_()
    _ce_z_reference(ref, t, 1e-2).backward()
    torch.testing.assert_close(logits.grad.float(), ref.grad.float(), rtol=2e-2, atol=1e-6)


def test_a_new_loss_term_is_one_entry(monkeypatch):
    """A term added to LOSS_TERMS (name -> function of LossInput) is weighted by the keyword of its name in
    compute_loss and GPT.forward and comes back in terms under that name; the others are unchanged."""
    import losses
    from model import GPT, GPTConfig
    monkeypatch.setitem(losses.LOSS_TERMS, 'logit_l2', lambda x: x.logits.square().mean())
    logits, targets = _random_batch()
    total, terms = compute_loss(logits, targets, z_loss=1e-2, logit_l2=0.5)
    ref = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=IGNORE_INDEX)
    torch.testing.assert_close(terms['logit_l2'], logits.square().mean())
    torch.testing.assert_close(total, ref + 1e-2 * terms['z_loss'] + 0.5 * logits.square().mean())
    assert list(terms) == ['ce', 'z_loss', 'logit_l2']
    torch.manual_seed(0)
    m = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=8, block_size=8, vocab_size=11))
    x, y = torch.randint(0, 11, (2, 8)), torch.randint(0, 11, (2, 8))
    loss, terms = m(x, targets=y, logit_l2=0.5)
    torch.testing.assert_close(loss, compute_loss(m(x), y, None, logit_l2=0.5)[0])
    with pytest.raises(TypeError, match="unknown loss terms \\['logit_l3'\\]"):
        compute_loss(logits, targets, logit_l3=1.0)


def test_unigram_log_probs_counts_every_chunk():
    """A memmap is streamed in chunks: the counts of all chunks add up (not only the last chunk's)."""
    tokens = np.random.default_rng(0).integers(0, 13, size=1000)
    whole = unigram_log_probs(tokens, 16)
    for chunk in (1, 7, 999, 1000, 5000):
        np.testing.assert_array_equal(unigram_log_probs(tokens, 16, chunk=chunk).numpy(), whole.numpy())
    np.testing.assert_allclose(whole[:13].exp().numpy(), np.bincount(tokens, minlength=13) / 1000, rtol=1e-12)


def test_unigram_log_probs_edges():
    with pytest.raises(ValueError, match=r"token id 50 outside \[0, 50\).*vocab_size"):  # == V is outside
        unigram_log_probs(np.array([0, 50]), 50)
    with pytest.raises(ValueError, match="no tokens given"):
        unigram_log_probs(np.array([], dtype=np.int64), 50)
    one = unigram_log_probs(np.array([3]), 5)  # a single token is a valid corpus: p = 1
    assert one[3].item() == 0.0 and np.isneginf(one[[0, 1, 2, 4]].numpy()).all()


def test_unigram_log_probs_warns_nothing_for_unseen_tokens():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # log(0) = -inf is the documented result, not a RuntimeWarning
        logp = unigram_log_probs(np.array([1, 1, 2]), 6)
    assert np.isneginf(logp[0].item())


def test_compute_loss_with_a_single_trained_target_equals_torch():
    """The CE mean divides by the number of trained targets, also when that number is 1."""
    import torch
    from torch.nn import functional as F

    from losses import IGNORE_INDEX, compute_loss

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 11, generator=g)
    targets = torch.full((2, 3), IGNORE_INDEX)
    targets[1, 2] = 4
    total, terms = compute_loss(logits, targets, None, z_loss=1e-3)
    ref = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
    assert terms['ce'].item() == pytest.approx(ref.item(), rel=1e-6)
    assert terms['z_loss'].item() == pytest.approx(torch.logsumexp(logits[1, 2], 0).item() ** 2, rel=1e-6)


def test_diagnostics_messages_say_what_and_how():
    from losses import IGNORE_INDEX, embedding_diagnostics, logit_diagnostics
    with pytest.raises(ValueError, match=r"^unigram_log_probs: token id 50 outside \[0, 50\): pass the model's "
                                         r"vocab_size \(meta\.json\) for this dataset$"):
        unigram_log_probs(np.array([0, 50]), 50)
    with pytest.raises(ValueError, match="^unigram_log_probs: no tokens given$"):
        unigram_log_probs(np.array([], dtype=np.int64), 50)
    with pytest.raises(ValueError, match="^logit_diagnostics got no tokens: every target is IGNORE_INDEX$"):
        logit_diagnostics(torch.zeros(1, 2, 5), torch.full((1, 2), IGNORE_INDEX))
    with pytest.raises(ValueError, match=r"^log_unigram has shape \(6,\), expected \(7,\): count it with "
                                         r"unigram_log_probs\(tokens, vocab_size=model vocab_size\)$"):
        embedding_diagnostics(torch.randn(7, 4), torch.zeros(6))


def test_smin_smax_of_a_rank_deficient_embedding_is_zero_not_nan():
    """V < H: E^T E has H - V zero eigenvalues, which LAPACK returns as tiny numbers of either sign; they are
    clipped at 0 before the square root, so smin/smax is ~0, never NaN."""
    from losses import embedding_diagnostics
    for seed in range(10):
        E = torch.randn(3, 16, generator=torch.Generator().manual_seed(seed))
        r = embedding_diagnostics(E)["smin_smax"]
        assert np.isfinite(r) and 0 <= r < 1e-6
