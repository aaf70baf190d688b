# GPT-2 124M on OpenWebText-style data, nanoGPT's recipe (~295B tokens; val loss ~2.85 after 600k steps)
# launch: torchrun --standalone --nproc_per_node=8 train.py config/train_gpt2_124m.py --parallelism=ddp
# first: python data.py prepare --dataset=owt --input=<text folder> --tokenizer=gpt2
# batch: 12 sequences x 1024 tokens x 40 micro-steps (global; 5 per GPU on 8 GPUs) = 491,520 tokens/step
out_dir = 'out-gpt2-124m'
dataset = 'owt'
model_preset = 'gpt2'  # 12 layers, 12 heads, 768 wide, block 1024, tied, GELU-tanh, biases
vocab_multiple = 64  # 50257 -> 50304: faster matmuls on GPU
batch_size = 12
block_size = 1024
gradient_accumulation_steps = 5 * 8
max_iters = 600000
lr_decay_iters = 600000
learning_rate = 6e-4
min_lr = 6e-5
warmup_iters = 2000
weight_decay = 0.1
eval_interval = 1000
eval_iters = 200
log_interval = 10
compile = True
