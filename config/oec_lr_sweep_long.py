# The OEC learning-rate sweep (config/oec_lr_sweep.py) run 3.3x longer and into higher rates, to look for the
# baseline's break-down (OEC, arXiv:2601.02031) that 300 steps do not show. 20 runs, about 20 min on 2 CPU cores.
#   python sweep.py config/oec_lr_sweep_long.py
exec(open('config/oec_lr_sweep.py').read())  # the same OEC setup, model and variants
max_iters = 1000  # 1000 steps x 8 x 64 = 512k tokens per run
lr_decay_iters = 1000
warmup_iters = 50  # 5% of the steps, as in the paper
eval_interval = 500
sweep = dict(learning_rate=[1e-2, 1e-1, 3e-1, 1.0, 3.0])
