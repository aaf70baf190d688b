# Adam vs Coupled Adam on a tied model, in miniature (Stollenwerk & Stollenwerk 2025, arXiv 2502.08441):
# GPT-2-style tiny model with tied embeddings on Shakespeare, 6 runs, about 30 min on 2 CPU cores.
#   python sweep.py config/coupled_adam.py
# Compare in sweeps/coupled_adam/results.csv: final_val_loss (about equal), isotropy (up with Coupled
# Adam), mu_ratio = ||mu|| / mean row norm (down), for each learning rate.
dataset = 'shakespeare'
n_layer = 4
n_head = 4
n_embd = 128
block_size = 64
batch_size = 16
bias = False
tie_embeddings = True  # the paper's setting: one matrix is embedding and unembedding
max_iters = 400
warmup_iters = 20
lr_decay_iters = 400
weight_decay = 0.1
decay_token_embedding = False  # the authors' grouping (embdecay=False): wte not decayed, wpe decayed
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0
eval_interval = 200
eval_iters = 10
log_interval = 10
sample_tokens = 0
device = 'cpu'
dtype = 'float32'
sweep = dict(learning_rate=[1e-3, 3e-3, 1e-2], optimizer=['adamw', 'coupled_adam'])
