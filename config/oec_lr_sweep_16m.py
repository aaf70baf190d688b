# The OEC paper's headline sweep at its smallest size (Stollenwerk, Lokrantz, Hertzberg 2026, arXiv 2601.02031,
# Sec. 4, v1 "wortsman" setting): OEC-16M (6 x 224, RoPE, SwiGLU, qk-LayerNorm, untied, Xavier), GPT-2
# vocabulary padded to 50304, FineWeb, 2048 x 64 = 131k tokens/step, 100k steps, bf16 autocast (the default on
# a bf16 GPU), AdamW (0.9, 0.95) without weight decay, 5000 warmup steps, cosine to 1e-5; 7 rates x 4 arms.
# Expected at 16M (the authors' loss_overview_all.csv and results/tables/overview_lr_sensitivity.tex):
# baseline 3.86 at best, 4.27 at 1e-1, 5.07 at 3e-1 with a mean logit > 1000; z-loss 3.96 at 3e-1 with
# ||mu|| ~ 800; mu-loss / mu-centering within 0.01 of their best; LRS baseline 0.306, z-loss 0.054,
# mu-loss 0.031, mu-centering 0.028.
#   python data.py prepare --dataset=fineweb --tokenizer=gpt2 --input=<FineWeb text/JSONL>   # once
#   python sweep.py config/oec_lr_sweep_16m.py                  # 28 runs one after another on one GPU
#   python sweep.py config/oec_lr_sweep_16m.py --dry_run --nproc_per_node=4   # or: one torchrun line per run
#   python sweep.py config/oec_lr_sweep_16m.py --max_iters=10000 --lr_decay_iters=10000 --warmup_iters=500 \
#       --sweep_dir=sweeps/oec_16m_10k                          # a 10x shorter first look (1.3B tokens/run)
# Budget: the paper's 13.1B tokens per run x 28 runs; at 16M parameters that is ~2 GPU-hours per run on an
# H100-class GPU with bf16 + compile (estimate from 6 N D FLOPs at ~40% MFU; not measured here).
exec(open('config/oec_16m.py').read())
compile = True
dtype = 'bfloat16'
eval_iters = 100
sample_tokens = 0
sweep = dict(learning_rate=[3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1])
variants = dict(
    baseline={},
    z_loss=dict(z_loss=1e-4),
    mu_loss=dict(mu_loss=1e-4),
    mu_centering=dict(mu_centering=True),
)
