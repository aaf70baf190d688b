# OEC 16M (Stollenwerk, Lokrantz, Hertzberg 2026, arXiv:2601.02031; the authors' nanoGPT/config/*): RoPE,
# SwiGLU, qk-LayerNorm, no bias, untied, Xavier, AdamW without weight decay, 5000 warmup steps then cosine to
# 1e-5, 100k steps. Add the arm to compare:
#   --z_loss=1e-4 | --mu_loss=1e-4 | --mu_centering=True ; sweep --learning_rate over 1e-3 ... 3e-1
# launch (the paper used 4 GPUs): torchrun --standalone --nproc_per_node=4 train.py config/oec_16m.py --parallelism=ddp
# batch: 16 sequences x 2048 tokens x 4 micro-steps (global; 1 per GPU on 4 GPUs) = 131,072 tokens/step
# -> 13.1B tokens in 100k steps (FineWeb, GPT-2 tokenizer:
#    python data.py prepare --dataset=fineweb --tokenizer=gpt2 ...)
out_dir = 'out-oec-16m'
dataset = 'fineweb'
model_preset = 'oec-16m'  # 6 layers / 224 wide / 4 heads, block 2048
vocab_multiple = 64  # 50257 -> 50304 as in the OEC code
batch_size = 16
gradient_accumulation_steps = 4
max_iters = 100000
lr_decay_iters = 100000
warmup_iters = 5000
learning_rate = 3e-3
min_lr = 1e-5
weight_decay = 0.0
beta2 = 0.95
grad_clip = 1.0
eval_interval = 2000
