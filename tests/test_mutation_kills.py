"""Behaviour tests written to kill the mutants that survived bench/mutate.py (mutmut) in the critical
functions; each test names the behaviour, the comment names the mutant class it kills. The equivalent
mutants (no behaviour to check) are listed in tests/README.md."""
import warnings

import numpy as np
import pytest

from losses import unigram_log_probs


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


def test_adaptive_fine_tuning_get_lr_and_one_step_cooldown():
    """get_lr() is the rate the optimizer uses; a one-step cool-down starts at lr_max and reaches 0."""
    import torch

    from optim import AdaptiveFineTuning

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = AdaptiveFineTuning(opt, steps_per_epoch=1, lr_max=0.5, warmup_epochs=0, cooldown_epochs=1)
    for val_loss in (1.0, 2.0):  # a best epoch, then one without improvement: the cool-down starts
        sched.step()
        sched.end_epoch(val_loss)
        assert sched.get_lr() == opt.param_groups[0]['lr']
    assert sched.phase == 'cooldown' and opt.param_groups[0]['lr'] == 0.5  # (1 - 0) / 1 of lr_max
    sched.step()
    assert opt.param_groups[0]['lr'] == 0.0 == sched.get_lr()


@pytest.mark.parametrize("name", ["layernorm", "rmsnorm", "dyt", "dyt_sp", "dyisru", "dyisru_sp"])
@pytest.mark.parametrize("bias", [True, False])
def test_make_norm_passes_eps_and_bias_through(name, bias):
    """make_norm hands eps and bias to every norm: the output is the formula with that eps, with a learnable
    bias exactly when asked (RMSNorm never has one)."""
    import torch

    from norms import make_norm

    eps, dim = 0.1, 16
    norm = make_norm(name, dim, eps=eps, bias=bias, alpha0=0.5)
    with torch.no_grad():
        norm.weight.copy_(torch.linspace(0.5, 1.5, dim))
        if norm.bias is not None:
            norm.bias.fill_(0.25)
    x = torch.randn(3, dim, generator=torch.Generator().manual_seed(0)) * 0.2  # mean x^2 ~ eps: eps matters
    w, b = norm.weight.detach(), 0.25 if norm.bias is not None else 0.0
    if name == "layernorm":
        want = w * (x - x.mean(-1, keepdim=True)) / (x.var(-1, unbiased=False, keepdim=True) + eps).sqrt() + b
    elif name == "rmsnorm":
        want = w * x / (x.pow(2).mean(-1, keepdim=True) + eps).sqrt()
    elif name.startswith("dyt"):
        want = w * torch.tanh(0.5 * x) + b  # DyT ignores eps
    else:
        want = w * x / (4.0 + x * x + eps).sqrt() + b  # beta0 = 1 / alpha0^2 = 4
    torch.testing.assert_close(norm(x).detach(), want, rtol=1e-5, atol=1e-6)
    assert (norm.bias is not None) == (bias and name != "rmsnorm")
    assert [n for n, _ in norm.named_parameters()].count("bias") == int(bias and name != "rmsnorm")


def test_dyisru_default_is_not_softplus():
    from norms import DyISRU

    assert DyISRU(4, beta0=4.0).beta.item() == 4.0 and not DyISRU(4).softplus


def test_norms_main_writes_the_plot_and_can_run_twice(tmp_path, monkeypatch, capsys):
    pytest.importorskip("matplotlib")
    import norms

    monkeypatch.chdir(tmp_path)
    for _ in range(2):  # a second run reuses out/
        norms.main()
        assert (tmp_path / "out" / "norms_outlier.png").stat().st_size > 0
    assert "plot saved to out/norms_outlier.png" in capsys.readouterr().out


def test_norm_constructor_defaults():
    """The documented defaults: eps 1e-5, a bias, DyT alpha0 0.5 and DyISRU beta0 4 (= 1/0.5^2), no softplus."""
    from norms import DyISRU, DyT, LayerNorm, RMSNorm, make_norm

    assert LayerNorm(4).eps == RMSNorm(4).eps == DyISRU(4).eps == 1e-5
    assert LayerNorm(4).bias is not None and DyT(4).bias is not None and DyISRU(4).bias is not None
    assert DyT(4).alpha.item() == 0.5 and not DyT(4).softplus and DyISRU(4).beta.item() == 4.0
    n = make_norm("dyisru", 4)
    assert n.eps == 1e-5 and n.bias is not None and n.beta.item() == 4.0  # alpha0 0.5 -> beta0 4
    assert make_norm("layernorm", 4).eps == 1e-5
