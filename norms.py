"""
Normalisation layers over the last dimension: LayerNorm, RMSNorm, DyT, DyISRU (+ softplus variants).

model.py calls make_norm() at every norm site (ln_1, ln_2, ln_f, qk-norm), so a new norm is one class
here and one name in make_norm. Formulas: the DyISRU paper (Stollenwerk
2025, arXiv 2503.21708, and its code `nanoGPT/dyaf.py`; DyT: Zhu et al. 2025, arXiv 2503.10622).

`python norms.py` reproduces the DyISRU paper's outlier experiment (arXiv 2503.21708, notebook
theory/Dynamic_Activation_Functions.ipynb) and saves a plot.
"""
import math
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

NORMS = ("layernorm", "rmsnorm", "dyt", "dyisru", "dyt_sp", "dyisru_sp")


def softplus_inverse(y: float) -> float:
    """x such that softplus(x) = log(1 + e^x) = y, i.e. log(e^y - 1), written to be stable for large y."""
    if y <= 0:
        raise ValueError(f"softplus_inverse needs y > 0, got {y}: softplus only takes positive values")
    return y + math.log(-math.expm1(-y))


@torch.no_grad()
def _reset_affine(norm: nn.Module) -> None:
    """gamma = 1, b = 0: every norm here starts as its plain formula (also after meta-device init)."""
    norm.weight.fill_(1.0)
    if norm.bias is not None:
        norm.bias.zero_()


class LayerNorm(nn.Module):
    """LayerNorm with an optional bias (PyTorch's nn.LayerNorm only gained bias=False in 2.1)."""

    def __init__(self, dim: int, eps: float = 1e-5, bias: bool = True):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.empty(dim))
        self.bias = nn.Parameter(torch.empty(dim)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _reset_affine(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)


class RMSNorm(nn.Module):
    """y = gamma * x / sqrt(mean(x^2) + eps) (Zhang & Sennrich 2019, arXiv 1910.07467). No bias, as in every
    RMSNorm we know of."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.empty(dim))
        self.bias = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _reset_affine(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, self.weight.shape, self.weight, self.eps)


class DyT(nn.Module):
    """Dynamic Tanh (Zhu et al. 2025, arXiv 2503.10622): y = gamma * tanh(alpha * x) + b, one learnable scalar
    alpha per layer.

    softplus=True is the paper code's `DyTsp`: alpha = softplus(alpha_hat), so alpha stays positive. The
    parameter `alpha` (shape (1,), as in the authors' `nanoGPT/dyaf.py`, and so that FSDP2 can shard it) then
    holds alpha_hat. Init: alpha0 is the effective alpha at init (alpha_hat0 = softplus^-1(alpha0)); raw0, when
    given, is the parameter's own init value instead, as the authors' configs write `init_alpha` (for DyTsp
    that is alpha_hat0, so alpha starts at softplus(raw0)).
    """

    def __init__(self, dim: int, alpha0: float = 0.5, bias: bool = True, softplus: bool = False,
                 raw0: float | None = None):
        super().__init__()
        self.softplus = softplus
        self.alpha0 = alpha0
        self.raw0 = raw0 if raw0 is not None else softplus_inverse(alpha0) if softplus else alpha0
        self.alpha = nn.Parameter(torch.empty(1))
        self.weight = nn.Parameter(torch.empty(dim))
        self.bias = nn.Parameter(torch.empty(dim)) if bias else None
        self.register_load_state_dict_pre_hook(_scalar_to_shape_1("alpha"))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        self.alpha.fill_(self.raw0)
        _reset_affine(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alpha = F.softplus(self.alpha) if self.softplus else self.alpha  # (1,) broadcasts over (..., C)
        y = self.weight * torch.tanh(alpha * x)
        return y + self.bias if self.bias is not None else y


class DyISRU(nn.Module):
    """Dynamic inverse square root unit (Stollenwerk 2025, arXiv 2503.21708):
    y = gamma * x / sqrt(beta + x^2 + eps) + b.

    beta is one learnable scalar per layer (shape (1,), as `alpha` of DyT). softplus=True is the paper code's
    `DyISRUsp` (the "DyISRU" of its LLM tables): beta = softplus(beta_hat), and the parameter `beta` then holds
    beta_hat. Init: beta0 is the effective beta at init (beta_hat0 = softplus^-1(beta0): 4 -> 3.98); raw0, when
    given, is the parameter's own init value instead, as the authors' configs write `init_beta` (for DyISRUsp
    that is beta_hat0, so beta starts at softplus(raw0)). A plain DyISRU needs beta0 >= 0 (else the square root
    of a negative number for small x).
    """

    def __init__(self, dim: int, beta0: float = 4.0, eps: float = 1e-5, bias: bool = True,
                 softplus: bool = False, raw0: float | None = None):
        super().__init__()
        self.eps = eps
        self.softplus = softplus
        self.beta0 = beta0
        self.raw0 = raw0 if raw0 is not None else softplus_inverse(beta0) if softplus else beta0
        if not softplus and self.raw0 < 0:
            raise ValueError(f"DyISRU: beta at init is {self.raw0} < 0, which makes sqrt(beta + x^2) undefined "
                             "for small x: use beta0 >= 0, or norm='dyisru_sp' (beta = softplus(beta_hat))")
        self.beta = nn.Parameter(torch.empty(1))
        self.weight = nn.Parameter(torch.empty(dim))
        self.bias = nn.Parameter(torch.empty(dim)) if bias else None
        self.register_load_state_dict_pre_hook(_scalar_to_shape_1("beta"))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        self.beta.fill_(self.raw0)
        _reset_affine(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        beta = F.softplus(self.beta) if self.softplus else self.beta  # (1,) broadcasts over (..., C)
        y = self.weight * x * torch.rsqrt(beta + x * x + self.eps)
        return y + self.bias if self.bias is not None else y


def make_norm(name: str, dim: int, eps: float = 1e-5, bias: bool = True, alpha0: float = 0.5,
              init: float | None = None) -> nn.Module:
    """The norm called `name` over the last dim of size `dim`.

    alpha0 is DyT's effective alpha at init; the DyISRU variants start at beta0 = 1/alpha0^2, the slope match
    at 0 (arXiv 2503.21708, results/Theory_Initial_Values.ipynb). init, when given, replaces that: it is the
    scalar parameter's own value at init,
    exactly as the authors' configs write `init_alpha` / `init_beta` (Stollenwerk 2025, arXiv 2503.21708, code
    `nanoGPT/dyaf.py`): dyt alpha0, dyt_sp alpha_hat0 (alpha = softplus), dyisru beta0, dyisru_sp beta_hat0
    (beta = softplus). init on layernorm/rmsnorm is an error (they have no such parameter).
    eps is unused by DyT; bias is unused by RMSNorm (it has none).
    """
    if init is not None and name in ("layernorm", "rmsnorm"):
        raise ValueError(f"norm_init={init} is set but norm={name!r} has no alpha/beta: set norm_init=None, "
                         "or norm to dyt, dyt_sp, dyisru or dyisru_sp")
    if name == "layernorm":
        return LayerNorm(dim, eps, bias)
    if name == "rmsnorm":
        return RMSNorm(dim, eps)
    if name in ("dyt", "dyt_sp"):
        return DyT(dim, alpha0, bias, softplus=name == "dyt_sp", raw0=init)
    if name in ("dyisru", "dyisru_sp"):
        return DyISRU(dim, 1.0 / alpha0**2, eps, bias, softplus=name == "dyisru_sp", raw0=init)
    raise ValueError(f"unknown norm {name!r}: set norm to one of {', '.join(NORMS)}")


def _scalar_to_shape_1(name: str):
    """load_state_dict pre-hook: a checkpoint written when `name` was a 0-dim tensor loads into shape (1,)."""
    def hook(module, state_dict, prefix, *args):
        key = prefix + name
        if key in state_dict and state_dict[key].dim() == 0:
            state_dict[key] = state_dict[key].reshape(1)
    return hook


# ----------------------------------------------------------------------------------------------------
# The outlier experiment of the DyISRU paper (arXiv 2503.21708; notebook theory/Dynamic_Activation_Functions)

def _golden_section(f, lo: float, hi: float, tol: float = 1e-10) -> float:
    """Minimiser of a unimodal f on [lo, hi] by golden-section search (scipy's curve_fit, for 1 param)."""
    g = (math.sqrt(5) - 1) / 2
    a, b = lo, hi
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = f(c), f(d)
    while b - a > tol * max(1.0, abs(a) + abs(b)):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = f(d)
    return (a + b) / 2


def _fit_1d(model, x: np.ndarray, y: np.ndarray, lo: float, hi: float) -> float:
    """Least-squares fit of the one parameter p of model(x, p): log-grid scan, then golden section."""
    sse = lambda p: float(((model(x, p) - y) ** 2).sum())  # noqa: E731
    grid = np.geomspace(lo, hi, 400)
    i = int(np.argmin([sse(p) for p in grid]))
    return _golden_section(sse, grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)])


def outlier_experiment(plot_path: str | None = None) -> dict[str, float]:
    """The DyISRU paper's outlier experiment: fit DyT and DyISRU to how LayerNorm squashes one growing
    outlier among C=100 channels.

    Returns alpha (DyT), beta (DyISRU) and their mean |residual|s; paper: 0.0486 / 0.328, 301.06 / 0.0048.
    """
    C = 100
    rng = np.random.RandomState(1)  # the notebook's np.random.seed(1) + np.random.normal
    h = np.sort(rng.normal(0.0, 2.0, C))  # the largest channel (x ~ 4.37) is the outlier
    xs, ys = [], []
    for s in range(1, 10):  # push the outlier by 5*S: x = 9.37 ... 49.37
        z = h.copy()
        z[-1] += 5 * s
        xs.append(z[-1])
        ys.append(((z - z.mean()) / z.std())[-1])  # LN output of the outlier (population std)
    x = np.concatenate([-np.array(xs[::-1]), xs])  # symmetrised (+-), as in the notebook
    y = np.concatenate([-np.array(ys[::-1]), ys])
    bound = math.sqrt(C - 1)  # LN with population std is bounded by sqrt(C-1) (arXiv 2503.21708)
    dyt = lambda x, a: bound * np.tanh(a * x)  # noqa: E731
    dyisru = lambda x, b: bound * x / np.sqrt(b + x**2)  # noqa: E731
    alpha = _fit_1d(dyt, x, y, 1e-4, 10.0)
    beta = _fit_1d(dyisru, x, y, 1e-2, 1e5)
    out = dict(alpha=alpha, dyt_mean_abs_residual=float(np.abs(dyt(x, alpha) - y).mean()),
               beta=beta, dyisru_mean_abs_residual=float(np.abs(dyisru(x, beta) - y).mean()))
    if plot_path:
        _plot_outlier(x, y, lambda t: dyt(t, alpha), lambda t: dyisru(t, beta), out, plot_path)
    return out


def _plot_outlier(x, y, dyt, dyisru, fit: dict, path: str) -> None:
    import matplotlib  # optional: only the plot needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = np.linspace(-60, 60, 601)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(x, y, "ko", label="LayerNorm (outlier channel)")
    ax.plot(t, dyt(t), label=f"DyT  alpha={fit['alpha']:.4f}  mean|res|={fit['dyt_mean_abs_residual']:.3f}")
    ax.plot(t, dyisru(t),
            label=f"DyISRU  beta={fit['beta']:.2f}  mean|res|={fit['dyisru_mean_abs_residual']:.4f}")
    ax.set_xlabel("input x of the outlier channel")
    ax.set_ylabel("normalised output y")
    ax.set_title("Outlier experiment (arXiv 2503.21708, C = 100)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


EXPERIMENT_DEFAULTS = dict(
    out="out",  # folder for the plot norms_outlier.png ('' = no plot)
)


def main(argv: list[str] | None = None) -> None:
    """`python norms.py [--out=DIR]`: the DyISRU paper's outlier experiment, printed next to the paper's values."""
    from configurator import configure
    out = configure(dict(EXPERIMENT_DEFAULTS), argv or [], source=__file__)["out"]
    plot_path = os.path.join(out, "norms_outlier.png") if out else None  # --out='' = no plot, asked for
    if plot_path:
        try:
            import matplotlib  # noqa: F401
            os.makedirs(out, exist_ok=True)
        except ImportError:
            plot_path = None
            print("matplotlib not installed: skipping the plot (pip install matplotlib)")
    r = outlier_experiment(plot_path)
    print(f"DyT:    alpha = {r['alpha']:.4f}  mean |residual| = {r['dyt_mean_abs_residual']:.4f}"
          "   (paper: alpha 0.0486, 0.328)")
    print(f"DyISRU: beta  = {r['beta']:.2f}  mean |residual| = {r['dyisru_mean_abs_residual']:.4f}"
          "   (paper: beta 301.06, 0.0048)")
    print(f"DyISRU fits {r['dyt_mean_abs_residual'] / r['dyisru_mean_abs_residual']:.0f}x better")
    if plot_path:
        print(f"plot saved to {plot_path}")


if __name__ == "__main__":
    from configurator import run_cli
    run_cli("norms.py", main, sys.argv[1:])
