"""
Optimizers and learning-rate schedules.

  configure_optimizer  AdamW parameter groups (nanoGPT's decay rule), or Coupled Adam on one embedding matrix;
                       run_optimizer: the same from a train.py config (train.py and checkpoint.py convert)
  CoupledAdam          Adam whose second moment is averaged over the vocabulary (Stollenwerk & Stollenwerk
                       2025, arXiv 2502.08441)
  get_lr               warmup + cosine / WSD / constant, per iteration (nanoGPT style, no scheduler object);
                       lr_at: the same from a train.py config
  mu_centering_        OEC mu-centering, after every optimizer step (Stollenwerk, Lokrantz, Hertzberg 2026,
                       arXiv 2601.02031); mu_centering_where_ for a step that may be skipped
  gauge_shift_         the opposite gauge change: shift every output-embedding row so the mean logit mu.h_bar reaches a
                       target (the OEC mechanism check, config/oec_mechanism.py)
  guarded_step         opt.step() only where a device-side finite flag allows it (no host sync: fused AdamW,
                       CoupledAdam)

The NER fine-tuning schedule (adaptive fine-tuning, nerblackbox presets) is ner.AdaptiveFineTuning.
"""
import math

import torch
from torch import Tensor, nn

# -----------------------------------------------------------------------------
# Coupled Adam

class CoupledAdam(torch.optim.Optimizer):
    """AdamW (decoupled weight decay, bias correction) where, in groups with coupled=True, the second moment of
    each parameter with >= 2 dims is replaced by avg_scale * its mean over dim 0 (the vocabulary) before the
    square root: every row then shares one per-column v (Coupled Adam, Stollenwerk & Stollenwerk 2025, arXiv
    2502.08441; code flxst/coupled-adam nanoGPT/coupled_adam.py). The stored state exp_avg_sq stays per element
    (uncoupled), as in the authors' code. Groups with coupled=False (and 1-D parameters) follow torch.optim.AdamW
    exactly. Vectorised with torch._foreach_* like AdamW's foreach path. As fused AdamW, it keeps the step count
    on the parameter's device and takes `found_inf` (set by guarded_step): a step is skipped on the device, with
    no host-device sync.
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.95), eps: float = 1e-8,
                 weight_decay: float = 0.0, avg_scale: float = 1.0, coupled: bool = True):
        if lr < 0 or eps < 0 or weight_decay < 0 or avg_scale <= 0 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"CoupledAdam: invalid lr={lr}, betas={betas}, eps={eps}, weight_decay={weight_decay}"
                             f" or avg_scale={avg_scale} (need lr, eps, wd >= 0, 0 <= beta < 1, avg_scale > 0)")
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, avg_scale=avg_scale,
                        coupled=coupled)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if params:
                self._group_step(group, params)
        return loss

    def _group_step(self, group: dict, params: list[Tensor]) -> None:
        lr, eps, wd, (beta1, beta2) = group["lr"], group["eps"], group["weight_decay"], group["betas"]
        for p in params:
            if p.grad.is_sparse:
                raise RuntimeError("CoupledAdam does not support sparse gradients (use a dense nn.Embedding)")
            state = self.state[p]
            if not state:
                state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            # the step count lives on the parameter's device (as fused AdamW's), so that a step skipped on the
            # device does not count and nothing is read back; an int (older checkpoints) or a CPU tensor (what
            # Optimizer.load_state_dict leaves) is moved there once
            state["step"] = torch.as_tensor(state["step"], dtype=torch.float32, device=p.device)
        grads = [p.grad for p in params]
        exp_avgs = [self.state[p]["exp_avg"] for p in params]
        exp_avg_sqs = [self.state[p]["exp_avg_sq"] for p in params]
        steps = [self.state[p]["step"] for p in params]
        # found_inf (fused AdamW's attribute, set by guarded_step): a 0-dim float on the device, 1 = skip the step.
        # A skipped step leaves weights, moments and step count as they were, decided on the device (no host sync)
        found_inf = getattr(self, "found_inf", None)
        if found_inf is None:
            def pick(if_ok, _if_skipped):
                return if_ok
        else:
            ok = found_inf.to(steps[0].device) == 0  # 0-dim bool

            def pick(if_ok, if_skipped):  # a 0-dim float64 on the device (filled there: no copy from the host)
                return torch.where(ok, torch.full((), if_ok, dtype=torch.float64, device=ok.device), if_skipped)
            grads = [torch.where(ok, g, 0.0) for g in grads]  # a skipped step's inf/NaN never reaches the state
        # torch.optim.AdamW's op sequence (foreach, with its capturable form of the bias correction: tensors on the
        # device), so coupled=False matches AdamW to rounding
        torch._foreach_add_(steps, pick(1.0, 0.0))
        if wd != 0:
            torch._foreach_mul_(params, pick(1 - lr * wd, 1.0))
        torch._foreach_lerp_(exp_avgs, grads, pick(1 - beta1, 0.0))
        torch._foreach_mul_(exp_avg_sqs, pick(beta2, 1.0))
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)  # grads are 0 in a skipped step
        # t in fp32, or fp64 for fp64 weights; >= 1: a skipped first step has t = 0, and 1 - beta^0 would divide by 0
        t = torch._foreach_clamp_min([s.to(torch.promote_types(p.dtype, s.dtype)) for s, p in zip(steps, params)], 1.0)
        inv_step_size = torch._foreach_pow(beta1, t)  # -> (beta1^t - 1) / lr = 1 / step size; -inf when skipped
        torch._foreach_sub_(inv_step_size, 1.0)
        torch._foreach_div_(inv_step_size, pick(lr, 0.0))
        bias_correction2_sqrt = torch._foreach_pow(beta2, t)  # -> sqrt(1 - beta2^t)
        torch._foreach_neg_(bias_correction2_sqrt)
        torch._foreach_add_(bias_correction2_sqrt, 1.0)
        torch._foreach_sqrt_(bias_correction2_sqrt)
        # Coupled Adam (arXiv 2502.08441): v_c = avg_scale * mean_over_vocab(v), shape (1, H), shared by all rows
        coupled = [group["coupled"] and p.dim() >= 2 for p in params]
        second = [v.mean(dim=0, keepdim=True).mul_(group["avg_scale"]) if c else v
                  for v, c in zip(exp_avg_sqs, coupled)]
        denom = torch._foreach_sqrt(second)
        torch._foreach_div_(denom, bias_correction2_sqrt)
        torch._foreach_add_(denom, eps)
        torch._foreach_mul_(denom, inv_step_size)  # p += m / (denom / step size) = step size * m / denom
        plain = [i for i, c in enumerate(coupled) if not c]
        if plain:
            torch._foreach_addcdiv_([params[i] for i in plain], [exp_avgs[i] for i in plain],
                                    [denom[i] for i in plain])
        for i in (i for i, c in enumerate(coupled) if c):
            params[i].addcdiv_(exp_avgs[i], denom[i])  # denom (1,H) broadcasts over the V rows


# -----------------------------------------------------------------------------
# parameter groups

def _token_embedding(model: nn.Module) -> Tensor | None:
    """model.transformer.wte.weight (the lm_head too when tied), or None for a model without one."""
    return getattr(getattr(getattr(model, "transformer", None), "wte", None), "weight", None)


def configure_optimizer(model: nn.Module, optimizer: str = "adamw", learning_rate: float = 6e-4,
                        weight_decay: float = 0.1, betas: tuple[float, float] = (0.9, 0.95), eps: float = 1e-8,
                        coupled_adam_avg_scale: float = 1.0, device_type: str = "cpu",
                        decay_token_embedding: bool = True,
                        coupled_adam_embedding: str = "output") -> torch.optim.Optimizer:
    """One optimizer for the whole model.

    Weight decay, nanoGPT's rule (Karpathy's `configure_optimizers`, also the OEC code's and the DyISRU code's):
    every parameter with >= 2 dims gets `weight_decay` (Linear weights, wte, wpe, lm_head), 1-D ones (norms,
    biases, DyT alpha) none. decay_token_embedding=False takes the token embedding wte (the lm_head too when
    tied) out of the decay, as the Coupled Adam code does in both its arms (flxst/coupled-adam
    `nanoGPT/model.py::configure_optimizers`, `embdecay=False`; Stollenwerk & Stollenwerk 2025, arXiv
    2502.08441); wpe and an untied lm_head stay decayed there too.
    optimizer='adamw': torch AdamW, fused on CUDA, torch's default implementation elsewhere (on CPU the
    single-tensor path measured about 2x faster than foreach for a 12M-parameter model).
    optimizer='coupled_adam': one CoupledAdam whose coupled=True group holds one embedding matrix: the output
    embedding lm_head (coupled_adam_embedding='output': the softmax gradient acts on it, the paper's argument) or
    the token embedding wte ('input'); with tied embeddings both are the same matrix, as in the authors' runs.
    The coupled matrix is decayed or not by the rule above; every other group has coupled=False (plain AdamW).
    """
    if optimizer not in ("adamw", "coupled_adam"):
        raise ValueError(f"unknown optimizer {optimizer!r}: use --optimizer=adamw or --optimizer=coupled_adam")
    if coupled_adam_embedding not in ("output", "input"):
        raise ValueError(f"unknown coupled_adam_embedding {coupled_adam_embedding!r}: use --coupled_adam_embedding"
                         "=output (lm_head, the paper's matrix) or =input (wte)")
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]  # tied weights appear once
    wte = _token_embedding(model)
    no_decay_ids = {id(p) for _, p in named if p.dim() < 2}
    if not decay_token_embedding and wte is not None:
        no_decay_ids.add(id(wte))
    coupled_ids = set()
    if optimizer == "coupled_adam":
        if coupled_adam_embedding == "output":
            coupled = model.output_embedding() if hasattr(model, "output_embedding") else None
        else:
            coupled = wte
        coupled_ids = {id(coupled)} if coupled is not None else set()
        if not any(id(p) in coupled_ids for _, p in named):
            raise ValueError(f"optimizer='coupled_adam' with coupled_adam_embedding={coupled_adam_embedding!r} "
                             "needs a trainable matrix to couple (model.output_embedding() for 'output', "
                             "model.transformer.wte.weight for 'input'); this model has none: use --optimizer=adamw")
    groups = []
    for is_coupled in (False, True) if optimizer == "coupled_adam" else (False,):
        mine = [p for _, p in named if (id(p) in coupled_ids) == is_coupled]
        for decay in (True, False):
            params = [p for p in mine if (id(p) not in no_decay_ids) == decay]
            if params or not is_coupled:  # the two plain groups always exist (decay, no decay)
                groups.append(dict(params=params, weight_decay=weight_decay if decay else 0.0))
                if optimizer == "coupled_adam":
                    groups[-1]["coupled"] = is_coupled
    if optimizer == "adamw":
        fused = device_type == "cuda"
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, eps=eps, fused=fused,
                                 foreach=False if fused else None)
    return CoupledAdam(groups, lr=learning_rate, betas=betas, eps=eps, avg_scale=coupled_adam_avg_scale)


def run_optimizer(model: nn.Module, config: dict, device_type: str = "cpu") -> torch.optim.Optimizer:
    """The optimizer of a train.py run, from its config (train.py's keys: optimizer, learning_rate, weight_decay,
    beta1, beta2, coupled_adam_avg_scale, decay_token_embedding, coupled_adam_embedding). train.py and
    `checkpoint.py convert` both build it here, so a converted checkpoint has the groups the run trained with.
    A config written before a key existed gets configure_optimizer's default, which is what the run then used."""
    keys = ("optimizer", "learning_rate", "weight_decay", "coupled_adam_avg_scale", "decay_token_embedding",
            "coupled_adam_embedding")
    return configure_optimizer(model, betas=(config["beta1"], config["beta2"]), device_type=device_type,
                               **{k: config[k] for k in keys if k in config})


# -----------------------------------------------------------------------------
# mu-centering

@torch.no_grad()
def mu_centering_(weight: Tensor) -> None:
    """OEC mu-centering (Stollenwerk, Lokrantz, Hertzberg 2026, arXiv 2601.02031; code nanoGPT/train.py):
    e_i <- e_i - mu, in place, outside autograd, after optimizer.step().

    Shifting every row by the same vector adds (-mu . h) to every logit of a token, so softmax is unchanged.
    """
    weight.sub_(weight.mean(dim=0, keepdim=True))  # (V,H) - (1,H)


@torch.no_grad()
def mu_centering_where_(weight: Tensor, ok: Tensor) -> None:
    """mu_centering_ where ok (a 0-dim bool on the device), a bitwise no-op elsewhere (subtracts mean * 0):
    no host sync, so a step skipped for a non-finite loss leaves the embedding as it was."""
    weight.sub_(weight.mean(dim=0, keepdim=True) * ok)


@torch.no_grad()
def gauge_shift_(weight: Tensor, h_bar: Tensor, target: float) -> Tensor:
    """Add one vector c to every row of the output embedding E (V,H), in place, so that the mean logit over the
    vocabulary and over the tokens whose mean final hidden state is h_bar (H,) becomes `target`:
    mu . h_bar = target after the shift, with c = (target - mu . h_bar) h_bar / ||h_bar||^2 (the smallest such c).
    Returns c (H,).

    A gauge change (OEC, Stollenwerk, Lokrantz, Hertzberg 2026, arXiv 2601.02031: logits l_i = e_i . h, so
    e_i <- e_i + c adds c . h to every logit of a token): softmax, the cross-entropy and its gradient are unchanged
    in exact arithmetic (mu_centering_ is the same move with c = -mu). What changes is the size of the logits, so
    bf16 rounding, the z-loss (log Z moves by c . h) and the mu-loss (mu moves by c) see it. It injects the mean
    logit the paper's diverging baselines reach (about +1150 at 16M, lr 0.3) into a small model whose own mean logit
    stays near 0. Raises ValueError for a zero or non-finite h_bar.
    """
    h = h_bar.detach().to(torch.float64)
    hh = h.dot(h)
    if not torch.isfinite(hh) or hh == 0:
        raise ValueError(f"gauge_shift_: the mean hidden state has squared norm {hh.item()}: no direction to shift "
                         "the mean logit along")
    mu = weight.detach().to(torch.float64).mean(dim=0)  # (H,)
    c = (target - mu.dot(h)) / hh * h  # (H,)
    weight.add_(c.to(weight.dtype))  # (V,H) + (H,) broadcasts over the rows
    return c.to(weight.dtype)


# -----------------------------------------------------------------------------
# a step that may be skipped

def guarded_step(opt: torch.optim.Optimizer, ok: Tensor) -> None:
    """opt.step() only where ok (a 0-dim bool on the device) is True, without reading ok back when the optimizer
    can skip on the device: fused AdamW's found_inf (as torch.amp.GradScaler), and CoupledAdam's, leave weights,
    moments and step count untouched. Other optimizers read ok back (a host sync; free on CPU). Then zero_grad."""
    if opt.defaults.get('fused') or isinstance(opt, CoupledAdam):
        opt.found_inf = (~ok).float()
        opt.step()
    elif bool(ok):
        opt.step()
    opt.zero_grad(set_to_none=True)


# -----------------------------------------------------------------------------
# pretraining schedules

def get_lr(it: int, schedule: str = "cosine", learning_rate: float = 6e-4, min_lr: float = 6e-5,
           warmup_iters: int = 2000, lr_decay_iters: int = 600000, max_iters: int = 600000,
           wsd_decay_frac: float = 0.2) -> float:
    """Learning rate at iteration `it`; every schedule starts with nanoGPT's linear warmup lr*(it+1)/(warmup+1).

    cosine:   cosine from learning_rate (end of warmup) to min_lr at lr_decay_iters, then min_lr
    wsd:      warmup-stable-decay: constant, then linear to min_lr over the last wsd_decay_frac of max_iters
              (decay starts at max_iters - round(wsd_decay_frac * max_iters); min_lr at max_iters and after)
    constant: learning_rate after warmup
    """
    if schedule not in ("cosine", "wsd", "constant"):
        raise ValueError(f"unknown schedule {schedule!r}: use --schedule=cosine, wsd or constant")
    # config errors raise at every iteration, so a loop that calls get_lr(0) before training fails at once
    decay_iters = round(wsd_decay_frac * max_iters)
    decay_start = max_iters - decay_iters
    if schedule == "cosine" and lr_decay_iters <= warmup_iters:
        raise ValueError(f"cosine schedule needs lr_decay_iters ({lr_decay_iters}) > warmup_iters "
                         f"({warmup_iters}): raise --lr_decay_iters (usually = max_iters)")
    if schedule == "wsd" and (not 0 < wsd_decay_frac <= 1 or decay_iters == 0 or decay_start < warmup_iters):
        raise ValueError(f"wsd schedule: wsd_decay_frac={wsd_decay_frac} with max_iters={max_iters} and "
                         f"warmup_iters={warmup_iters} leaves no decay phase or overlaps the warmup: "
                         "use 0 < wsd_decay_frac <= 1 - warmup_iters / max_iters")
    if it < warmup_iters:
        return learning_rate * (it + 1) / (warmup_iters + 1)
    if schedule == "constant":
        return learning_rate
    if schedule == "cosine":
        if it > lr_decay_iters:
            return min_lr
        ratio = (it - warmup_iters) / (lr_decay_iters - warmup_iters)
        return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (learning_rate - min_lr)
    if it < decay_start:
        return learning_rate
    frac = min(1.0, (it - decay_start) / decay_iters)
    return learning_rate + frac * (min_lr - learning_rate)


def lr_at(it: int, cfg: dict) -> float:
    """get_lr at step `it` of a train.py config (decay_lr=False: constant)."""
    return get_lr(it, cfg['schedule'] if cfg['decay_lr'] else 'constant', cfg['learning_rate'],
                        cfg['min_lr'], cfg['warmup_iters'], cfg['lr_decay_iters'], cfg['max_iters'],
                        cfg['wsd_decay_frac'])
