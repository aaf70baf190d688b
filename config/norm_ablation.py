# LayerNorm vs RMSNorm vs DyT vs DyISRU over an init grid, in miniature (DyISRU paper, norms.md §3.4):
# GPT-2-style tiny model on Shakespeare, 20 runs, about 30 min on 2 CPU cores.
#   python sweep.py config/norm_ablation.py    # summary prints L1 / L2 / I / S per norm
# L1 = best loss over the 1-D init grid (one alpha0 for every norm of the model), L2 = best over the 2-D
# grid (the post-attention norm ln_2 gets its own norm_alpha0_attn), I = fraction of runs with loss >
# 1.1 x best, S = mean of the stable runs - best. norm_alpha0 is DyT's alpha0; DyISRU uses beta0 =
# 1/alpha0^2 (norms.md §3.2), so one grid serves both. The paper's DyISRU column is the softplus
# version: use 'dyisru_sp' / 'dyt_sp' below to match it.
dataset = 'shakespeare'
n_layer = 4
n_head = 4
n_embd = 64
block_size = 64
batch_size = 8
bias = False
max_iters = 250
learning_rate = 1e-2  # high for this size, so that unstable inits show up
min_lr = 1e-3
warmup_iters = 10
lr_decay_iters = 250
weight_decay = 0.1
beta2 = 0.95
eval_interval = 125
eval_iters = 10
log_interval = 10
sample_tokens = 0
device = 'cpu'
dtype = 'float32'
_alphas = [0.5, 1.0, 2.0]  # DyT alpha0 (DyISRU beta0 = 4, 1, 0.25); the notebook's range is 0.5 .. 3
variants = dict(layernorm=dict(norm='layernorm'), rmsnorm=dict(norm='rmsnorm'))
variants.update({f"{n}_a{a}": dict(norm=n, norm_alpha0=a) for n in ('dyt', 'dyisru') for a in _alphas})
variants.update({f"{n}_a{a}_attn{b}": dict(norm=n, norm_alpha0=a, norm_alpha0_attn=b)
                 for n in ('dyt', 'dyisru') for a in _alphas for b in _alphas if b != a})
