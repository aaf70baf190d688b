"""
Losses and the diagnostics the papers measure.

Training loss = cross-entropy + z_loss * z-loss + mu_loss * mu-loss (each term optional; LOSS_TERMS: one entry per
term, named by its config key), with optional logit soft-capping applied by the model (GPTConfig.logit_softcap calls
softcap() in forward).
  - z-loss (PaLM; OEC paper: Stollenwerk, Lokrantz, Hertzberg 2026, arXiv 2601.02031): mean over tokens of (log Z)^2
  - mu-loss (OEC code nanoGPT/model.py): ||mu||^2, mu = mean of the output-embedding rows
  - soft-capping (Gemma 2 form, arXiv:2408.00118; OEC v2): c * tanh(logits / c)
Diagnostics (OEC code nanoGPT/train.py; Coupled Adam: Stollenwerk & Stollenwerk 2025, arXiv:2502.08441,
code nanoGPT/analysis/), cheap enough to run at every eval on a few batches:
  logit_diagnostics(logits)            -> logits_mean_mean, logits_mean_std, logits_mean_absmax, mean_logsqZ
  hidden_diagnostics(h, E)             -> h_bar_norm, fhs_dot_prod (mu.h_bar), fhs_cos_sim, mean_norm_h
  embedding_diagnostics(E, log_unigram) -> mu_norm, mean_row_norm, mu_ratio, isotropy (the authors'),
                                           isotropy_signfree, smin_smax, corr_emu_logfreq (the authors'),
                                           corr_emu_logfreq_spearman, corr_norm_logfreq, corr_emu_logfreq_seen
"""
import math
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

IGNORE_INDEX = -100  # targets with this value are skipped by every loss and diagnostic


def cross_entropy(logits: Tensor, targets: Tensor, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """Mean CE over non-ignored tokens. logits (B,T,V) or (N,V); targets (B,T) or (N,)."""
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=ignore_index)


def _at_least_fp32(x: Tensor) -> Tensor:
    return x.to(torch.promote_types(x.dtype, torch.float32))  # bf16/fp16 -> fp32; fp32/fp64 unchanged


def z_loss(logits: Tensor, mask: Tensor | None = None) -> Tensor:
    """PaLM z-loss, unweighted: mean over (masked-in) tokens of logsumexp(logits)^2 (PaLM, arXiv:2204.02311; OEC code
    nanoGPT/model.py).

    logits (..., V) of any float dtype (computed in fp32 or better); mask (...) bool, True = token counts.
    """
    lse = torch.logsumexp(_at_least_fp32(logits), dim=-1)  # (...,) = log Z per token
    if mask is None:
        return lse.square().mean()
    return lse.square()[mask].mean()


def mu_loss(weight: Tensor) -> Tensor:
    """mu-loss, unweighted: ||mu||^2 with mu = mean over the vocabulary of the rows of weight (V,H) (OEC code
    nanoGPT/model.py)."""
    mu = weight.mean(dim=0)  # (H,)
    return torch.dot(mu, mu)


def softcap(logits: Tensor, c: float) -> Tensor:
    """Logit soft-capping, Gemma-2 form c * tanh(logits / c) (Gemma 2, arXiv:2408.00118;
    OEC v2 uses c = 30)."""
    return c * torch.tanh(logits / c)


class _CrossEntropyZLoss(torch.autograd.Function):
    """CE and z-loss in one pass: (ce, z) = (mean(-log p_t), mean(lse^2)) over the masked-in tokens.

    Forward is one log_softmax; lse = l_t - log p_t. Backward is one softmax for both terms:
    dL/dl = softmax(l) * (g_ce + 2 g_z lse) / n - g_ce * onehot(t) / n. It moves as many bytes as
    F.cross_entropy (log_softmax + nll), and on CPU it is faster than F.cross_entropy alone (whose CPU backward
    is slow: bench/bench_features.py), while F.cross_entropy + a separate logsumexp for the z-loss would cost
    two more passes over (N, V) each way. Tests check it against F.cross_entropy, z_loss() and gradcheck.
    """

    @staticmethod
    def forward(ctx, logits: Tensor, targets: Tensor, ignore_index: int) -> tuple[Tensor, Tensor]:
        # logits (N,V) fp32, targets (N,)
        logp = torch.log_softmax(logits, dim=-1)  # (N,V)
        mask = targets != ignore_index
        t = torch.where(mask, targets, 0)[:, None]  # (N,1)
        n = mask.sum().clamp(min=1)
        logp_t = logp.gather(1, t).squeeze(1)  # (N,)
        lse = logits.gather(1, t).squeeze(1) - logp_t  # (N,) log Z
        ce = torch.where(mask, -logp_t, 0.0).sum() / n
        zl = torch.where(mask, lse.square(), 0.0).sum() / n
        ctx.save_for_backward(logp, t, lse, mask, n)
        return ce, zl

    @staticmethod
    def backward(ctx, g_ce: Tensor, g_z: Tensor):
        logp, t, lse, mask, n = ctx.saved_tensors
        w = mask / n  # (N,) 1/n for kept tokens, 0 for ignored ones
        grad = torch.exp(logp)  # (N,V) softmax
        grad.mul_(((g_ce + 2 * g_z * lse) * w)[:, None])
        if torch.compiler.is_compiling():
            # one pointwise expression: inductor fuses exp, scale, the one-hot term and the cast to the logits'
            # dtype into one kernel that writes only the (N,V) gradient in that dtype. An in-place scatter_add_
            # here made it realise an extra fp32 (N,V) buffer first (4 bytes x N x V written and read again)
            onehot = torch.arange(grad.size(1), device=grad.device) == t  # (N,V) bool, never materialised
            return torch.where(onehot, grad - (g_ce * w)[:, None], grad), None, None
        grad.scatter_add_(1, t, (-g_ce * w)[:, None].to(grad.dtype))  # eager: in place, no (N,V) temporary
        return grad, None, None


class LossInput(NamedTuple):
    """What a loss term is computed from: logits (N, V) in fp32 or better, targets (N,) (IGNORE_INDEX = skip), the
    output embedding (V, H) (None when the caller has none), and the z-loss of the cross-entropy pass (0-dim)."""
    logits: Tensor
    targets: Tensor
    output_embedding: Tensor | None
    z_loss: Tensor


def _mu_loss_of(x: LossInput) -> Tensor:
    if x.output_embedding is None:
        raise ValueError("mu_loss > 0 needs the output embedding: call compute_loss(..., "
                         "output_embedding=model.output_embedding()) or set --mu_loss=0")
    return mu_loss(x.output_embedding)


# The weighted loss terms beside cross-entropy, in the order they are added. Each name is the train.py config key
# of the term's weight lambda (0 = off) and the key of its unweighted value in `terms`, the log and metrics.jsonl.
# A new term: its function above, one entry here, and `name = 0.0  # lambda of ...` in train.py's config block.
LOSS_TERMS = {
    'z_loss': lambda x: x.z_loss,  # PaLM z-loss, z_loss() computed in the cross-entropy pass
    'mu_loss': _mu_loss_of,  # OEC mu-loss, mu_loss() of the output embedding
}


def compute_loss(logits: Tensor, targets: Tensor, output_embedding: Tensor | None = None,
                 **weights: float) -> tuple[Tensor, dict[str, Tensor]]:
    """Total training loss and its terms; weights: lambda per LOSS_TERMS name (z_loss=1e-4, mu_loss=1e-4, ...).

    total = ce + sum of weights[name] * terms[name]; terms are unweighted and detached, for logging; 'ce' always,
    each other term only when its weight > 0. targets == IGNORE_INDEX are skipped (a batch whose targets are all
    ignored gives ce = 0 and no gradient, where F.cross_entropy gives nan). An unknown name raises TypeError.
    """
    unknown = sorted(weights.keys() - LOSS_TERMS.keys())
    if unknown:
        raise TypeError(f"compute_loss got unknown loss terms {unknown}: the terms are {list(LOSS_TERMS)}")
    negative = {k: v for k, v in weights.items() if v < 0}
    if negative:
        raise ValueError(f"loss weights must be >= 0, got {', '.join(f'{k}={v}' for k, v in negative.items())}: "
                         f"set {' / '.join(f'--{k}' for k in negative)} to 0 (off) or a positive lambda "
                         f"(papers use 1e-4)")
    lg = _at_least_fp32(logits).reshape(-1, logits.size(-1))  # (N,V); fp32 like F.cross_entropy under autocast
    ce, zl = _CrossEntropyZLoss.apply(lg, targets.reshape(-1), IGNORE_INDEX)  # = cross_entropy(), z_loss()
    x = LossInput(lg, targets.reshape(-1), output_embedding, zl)
    total, terms = ce, {"ce": ce.detach()}
    for name, term in LOSS_TERMS.items():
        if weights.get(name, 0.0) > 0:
            value = term(x)
            total = total + weights[name] * value
            terms[name] = value.detach()
    return total, terms


# -----------------------------------------------------------------------------
# diagnostics

@torch.no_grad()
def logit_diagnostics(logits: Tensor, targets: Tensor | None = None) -> dict[str, float]:
    """Output-logit statistics of the OEC code (nanoGPT/train.py `analyze_final_hidden_states`).

    logits (B,T,V) or (N,V); targets, if given, drop IGNORE_INDEX positions. With l the logits of one token:
      logits_mean_mean   = mean over tokens of mean_i l_i
      logits_mean_std    = mean over tokens of std_i l_i   (the authors' key: mean of the per-token std)
      logits_mean_absmax = mean over tokens of max_i |l_i|
      mean_logsqZ        = mean over tokens of (logsumexp_i l_i)^2
    """
    lg = logits.float().reshape(-1, logits.size(-1))  # (N,V)
    if targets is not None:
        lg = lg[targets.reshape(-1) != IGNORE_INDEX]
    if lg.size(0) == 0:
        raise ValueError("logit_diagnostics got no tokens: every target is IGNORE_INDEX")
    return {
        "logits_mean_mean": lg.mean(dim=-1).mean().item(),
        "logits_mean_std": lg.std(dim=-1).mean().item(),
        "logits_mean_absmax": lg.abs().amax(dim=-1).mean().item(),
        "mean_logsqZ": torch.logsumexp(lg, dim=-1).square().mean().item(),
    }


@torch.no_grad()
def hidden_diagnostics(h: Tensor, weight: Tensor, targets: Tensor | None = None) -> dict[str, float]:
    """What the mean logit is made of (OEC, Stollenwerk, Lokrantz, Hertzberg 2026, arXiv 2601.02031): the mean
    logit over the vocabulary of a token is mean_i e_i . h = mu . h, so over tokens it is mu . h_bar, with h_bar the
    mean final hidden state. A large |mu| alone does not hurt; the product does.

    h (B,T,H) or (N,H): final hidden states (after the final norm); weight E (V,H): the output embedding; targets,
    if given, drop IGNORE_INDEX positions. Computed in float64, over the given tokens:
      h_bar_norm    ||h_bar||, h_bar = mean over tokens of h            (the paper's |h-bar|)
      fhs_dot_prod  mu . h_bar                                         (the authors' key; paper symbol mu . h-bar)
      fhs_cos_sim   cos(mu, h_bar) = mu . h_bar / (||mu|| ||h_bar||)     (the authors' key; 0 when either is 0)
      mean_norm_h   mean over tokens of ||h||                           (the authors' key)
    The authors' names are those of their plot labels (results/plots.py YLABEL); in their loss_overview_all.csv the
    output embedding's mu . h_bar is the column I.fhs_dot_prod (it equals O.logits_mean_mean: 1151 vs 1152 for the
    16M baseline at lr 0.3). Without soft-capping fhs_dot_prod is logits_mean_mean computed before any rounding.
    """
    hs = h.detach().double().reshape(-1, h.size(-1))  # (N,H)
    if targets is not None:
        hs = hs[targets.reshape(-1) != IGNORE_INDEX]
    if hs.size(0) == 0:
        raise ValueError("hidden_diagnostics got no tokens: every target is IGNORE_INDEX")
    h_bar = hs.mean(dim=0)  # (H,)
    mu = weight.detach().double().mean(dim=0)  # (H,)
    dot, norms = mu.dot(h_bar), mu.norm() * h_bar.norm()
    return {
        "h_bar_norm": h_bar.norm().item(),
        "fhs_dot_prod": dot.item(),
        "fhs_cos_sim": (dot / norms).item() if norms > 0 else 0.0,
        "mean_norm_h": hs.norm(dim=1).mean().item(),
    }


def unigram_log_probs(tokens: np.ndarray, vocab_size: int, chunk: int = 1 << 26) -> Tensor:
    """log p(token) from counts over `tokens` (e.g. the train.bin memmap), counted once per run.

    Returns (V,) float64; tokens that never occur get -inf (no smoothing): embedding_diagnostics applies the
    authors' floor for corr_emu_logfreq and leaves them out for corr_emu_logfreq_seen.
    Counted in chunks so a large memmap is streamed, not loaded.
    """
    counts = np.zeros(vocab_size, dtype=np.int64)
    for start in range(0, len(tokens), chunk):
        part = np.asarray(tokens[start:start + chunk]).astype(np.int64)
        if part.size and (part.min() < 0 or part.max() >= vocab_size):
            raise ValueError(f"unigram_log_probs: token id {int(part.max())} outside [0, {vocab_size}): "
                             "pass the model's vocab_size (meta.json) for this dataset")
        counts += np.bincount(part, minlength=vocab_size)
    if counts.sum() == 0:
        raise ValueError("unigram_log_probs: no tokens given")
    with np.errstate(divide="ignore"):
        return torch.from_numpy(np.log(counts / counts.sum()))


# The Coupled Adam code's log-probability floor: log(p + 1e-10) over every row of the padded vocabulary, so a
# token unseen in training sits at log(1e-10) = -23.0 (flxst/coupled-adam `nanoGPT/analysis/lbp.py`)
UNIGRAM_FLOOR = 1e-10


def _pearson(x: Tensor, y: Tensor) -> float:
    x, y = x.double() - x.double().mean(), y.double() - y.double().mean()
    return (x @ y / (x.norm() * y.norm())).item()


def _ranks(x: Tensor) -> Tensor:
    """Ranks 1..n with ties given their average rank (scipy.stats.rankdata's 'average', as spearmanr uses)."""
    values, inverse, counts = torch.unique(x.double(), return_inverse=True, return_counts=True)
    last = torch.cumsum(counts, 0).double()  # (U,) rank of the last member of each tie group
    return (last - (counts.double() - 1) / 2)[inverse]


@torch.no_grad()
def embedding_diagnostics(weight: Tensor, log_unigram: Tensor | None = None) -> dict[str, float]:
    """Geometry of an (output) embedding E (V,H) (OEC: Stollenwerk et al. 2026, arXiv 2601.02031; Coupled Adam:
    Stollenwerk & Stollenwerk 2025, arXiv 2502.08441), named and computed as in the authors' analysis code.

      mu_norm           ||mu||, mu = mean_i e_i
      mean_row_norm     mean_i ||e_i||
      mu_ratio          ||mu|| / mean_i ||e_i||      (mean shift; lower is better)
      isotropy          Mu et al. 2018 (arXiv 1702.01417) as the OEC and Coupled Adam code compute it
                        (`nanoGPT/analysis/isotropy.py` of flxst/output-embedding-centering, flxst/coupled-adam):
                        min_c Z(c) / max_c Z(c), Z(c) = sum_i exp(c . e_i), c over the eigenvectors of E^T E
                        with the one sign each that numpy.linalg.eig returns; summed as logsumexp, which equals
                        their np.exp sum where that is finite and stays finite where theirs overflows to 0/nan
      isotropy_signfree the same with min/max over both signs of every eigenvector: independent of what LAPACK
                        returns, and <= isotropy (about its square when mu dominates); not the published number
      smin_smax         smallest / largest singular value of E
      with log_unigram (unigram_log_probs):
      corr_emu_logfreq          Pearson r of E.mu with log(p + 1e-10) over ALL V rows, the Coupled Adam code's
                                `corr_p(Emu, lbp)` (unseen and padded rows at the floor, UNIGRAM_FLOOR)
      corr_emu_logfreq_spearman the same, Spearman (`corr_s(Emu, lbp)`)
      corr_norm_logfreq         Pearson r of ||e_i|| with log(p + 1e-10) (`corr_p(norm, lbp)`)
      corr_emu_logfreq_seen     Pearson r of E.mu with log p over the tokens seen in training only
    """
    E = weight.detach().float()  # (V,H)
    mu = E.mean(dim=0)  # (H,)
    row_norms = E.norm(dim=1)  # (V,)
    mean_row_norm = row_norms.mean()
    # E^T E in float64 (H,H) on E's device; its eigenvectors by numpy's LAPACK on the CPU: eig, not eigh, so that
    # the signs are the authors' (and torch's CPU eigh took ~1 s for H=128 on 2 busy cores, numpy 2 ms)
    E64 = E.double()
    gram = (E64.T @ E64).cpu().numpy()  # (H,H)
    if np.isfinite(gram).all():
        eigvals, eigvecs = np.linalg.eig(gram)  # eigenvalues = squared singular values of E
    else:  # non-finite weights (a diverging run): NaN diagnostics, so that the caller's own check reports it
        eigvals, eigvecs = np.full(gram.shape[0], np.nan), np.full(gram.shape, np.nan)
    proj = E64 @ torch.from_numpy(np.real(eigvecs)).to(E64.device)  # (V,H) c . e_i for every eigenvector c
    log_z = torch.logsumexp(proj, dim=0)  # (H,) log Z(c) with the authors' signs
    log_z_both = torch.cat([log_z, torch.logsumexp(-proj, dim=0)])  # (2H,) and log Z(-c)
    svals = np.sort(np.sqrt(np.clip(np.real(eigvals), 0, None)))
    out = {
        "mu_norm": mu.norm().item(),
        "mean_row_norm": mean_row_norm.item(),
        "mu_ratio": (mu.norm() / mean_row_norm).item(),
        "isotropy": torch.exp(log_z.min() - log_z.max()).item(),
        "isotropy_signfree": torch.exp(log_z_both.min() - log_z_both.max()).item(),
        "smin_smax": float(svals[0] / svals[-1]),
    }
    if log_unigram is not None:
        if log_unigram.shape != (E.size(0),):
            raise ValueError(f"log_unigram has shape {tuple(log_unigram.shape)}, expected ({E.size(0)},): "
                             "count it with unigram_log_probs(tokens, vocab_size=model vocab_size)")
        lp = log_unigram.double().cpu()  # (V,)
        lbp = torch.logaddexp(lp, torch.tensor(math.log(UNIGRAM_FLOOR), dtype=torch.float64))  # log(p + floor)
        emu = (E64 @ mu.double()).cpu()  # (V,)
        seen = torch.isfinite(lp)
        out["corr_emu_logfreq"] = _pearson(emu, lbp)
        out["corr_emu_logfreq_spearman"] = _pearson(_ranks(emu), _ranks(lbp))
        out["corr_norm_logfreq"] = _pearson(row_norms.double().cpu(), lbp)
        out["corr_emu_logfreq_seen"] = _pearson(emu[seen], lp[seen])
    return out
