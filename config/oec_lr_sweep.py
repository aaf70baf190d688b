# OEC (output embedding centering) vs z-loss, learning-rate sweep in miniature: the OEC paper's setup
# (Stollenwerk, Lokrantz, Hertzberg 2026, arXiv 2601.02031) at a tiny width on Shakespeare, 2 CPU cores,
# about 30 min for the 28 runs.
#   python sweep.py config/oec_lr_sweep.py               # results in sweeps/oec_lr_sweep/
#   python sweep.py config/oec_lr_sweep.py --dry_run     # the torchrun lines instead
# Look for (the paper's results; the authors' loss_overview_all.csv): baseline degrades/diverges at the
# highest rates with a huge mean logit (logits_mean_mean), z-loss keeps mean_logsqZ small while mu_norm grows,
# mu-loss / mu-centering keep mu_norm ~ 0 and stay near their best loss; LR sensitivity per variant in the
# printed summary.
dataset = 'shakespeare'
# model: RoPE, SwiGLU, qk-LayerNorm, LayerNorm without biases, untied head, Xavier init (OEC v1 configs)
n_layer = 2
n_head = 4
n_embd = 64
block_size = 64
pos = 'rope'
mlp = 'swiglu'
qk_norm = True
norm = 'layernorm'
bias = False
tie_embeddings = False
init = 'xavier'
dropout = 0.0
# optimizer: AdamW (0.9, 0.95), clip 1.0, no weight decay ("wortsman" setting), warmup + cosine to 1e-5
weight_decay = 0.0
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0
schedule = 'cosine'
max_iters = 300  # 300 steps x 8 x 64 = 154k tokens per run
warmup_iters = 15  # 5% of the steps, as 5000 of 100k in the paper
lr_decay_iters = 300
min_lr = 1e-5
batch_size = 8
# evaluation: val loss + logit/embedding diagnostics at the end (summary.json -> results.csv)
eval_interval = 150
eval_iters = 10
log_interval = 10
sample_tokens = 0
device = 'cpu'
dtype = 'float32'
# the paper's 7 rates are 3e-4 .. 3e-1; a tiny model tolerates more, so the grid goes to 1.0
sweep = dict(learning_rate=[1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0])
variants = dict(
    baseline={},
    z_loss=dict(z_loss=1e-4),  # PaLM z-loss as in OEC, lambda 1e-4
    mu_loss=dict(mu_loss=1e-4),  # OEC mu-loss, lambda 1e-4
    mu_centering=dict(mu_centering=True),  # OEC mu-centering
)
