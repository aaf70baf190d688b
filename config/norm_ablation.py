# LN vs DyT vs DyISRU over the init grid, in miniature: the arms of the DyISRU paper (Stollenwerk 2025,
# arXiv 2503.21708, Sec. 5; code abcde17/dynamic-activation-functions): LN ('ln'), DyT ('dyt', plain alpha)
# and DyISRU, whose LLM column is the softplus version ('dyisrusp': beta = softplus(beta_hat)).
# GPT-2-style tiny model on Shakespeare, 19 runs.
#   python sweep.py config/norm_ablation.py    # the summary prints L1 L2 L12 I1 I2 S1 S2 per norm
# Init values mean what they mean in the authors' configs (`init_alpha`, `init_beta`): norm_init is the raw
# parameter at init, i.e. DyT's alpha0 and DyISRUsp's beta_hat0 (beta0 = softplus(beta_hat0): -1 -> 0.31,
# 1 -> 1.31, 4 -> 4.02); norm_init_attn is ln_2's own init (their `init_*_attn`, the 2-D grid; unset = the
# diagonal, the 1-D grid). Metrics as the authors' results/plots.py: L1 / L2 = best loss on the 1-D / 2-D
# grid, I = fraction of runs with loss > 1.1 x best, S = mean of the stable runs - best, diverged runs count
# in the number of runs only. The architecture and optimizer are the authors' nanoGPT ones: learned
# positions, GELU, tied embeddings, N(0, 0.02), no biases (nanoGPT train.py's bias=False), AdamW (0.9, 0.95)
# with weight decay 0.1 on every >= 2-D weight (nanoGPT's grouping, the default), grad clip 1, warmup.
dataset = 'shakespeare'
n_layer = 4
n_head = 4
n_embd = 64
block_size = 64
batch_size = 8
bias = False
pos = 'learned'
mlp = 'gelu'
tie_embeddings = True
init = 'normal'
max_iters = 250
learning_rate = 1e-2  # high for this size, so that unstable inits show up
min_lr = 1e-3
warmup_iters = 10
lr_decay_iters = 250
weight_decay = 0.1
decay_token_embedding = True
beta2 = 0.95
grad_clip = 1.0
eval_interval = 125
eval_iters = 10
log_interval = 10
sample_tokens = 0
device = 'cpu'
dtype = 'float32'
_grids = dict(dyt=[0.5, 1.0, 2.0],  # alpha0: the paper's DyT range is 0.25 .. 3
              dyisru_sp=[-1.0, 1.0, 4.0])  # beta_hat0: the paper's DyISRUsp range is -2 .. 4
variants = dict(layernorm=dict(norm='layernorm'))
variants.update({f"{n}_i{a}": dict(norm=n, norm_init=a) for n, g in _grids.items() for a in g})
variants.update({f"{n}_i{a}_attn{b}": dict(norm=n, norm_init=a, norm_init_attn=b)
                 for n, g in _grids.items() for a in g for b in g if b != a})
