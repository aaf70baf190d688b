# The OEC mechanism with an injected shift (Stollenwerk, Lokrantz, Hertzberg 2026, arXiv 2601.02031): a check
# that a large mean logit mu.h_bar hurts bf16 training and that each arm acts on it as the paper says. Not the
# emergent divergence of the paper's 16M+ runs (a tiny model's own mean logit stays near -3; see
# docs/oec_miniature.md). One command: 830 s of CPU time; measured 63 min wall on a shared 2-core machine at load
# 13-18, an estimated 7-10 min on an idle one (an arm took 30-40 s there):
#   python sweep.py config/oec_mechanism.py            # results in sweeps/oec_mechanism/
# 1. start_run: 150 bf16 steps of the OEC miniature (config/oec_lr_sweep.py's model) at lr 1e-2.
# 2. every arm continues that checkpoint (weights, AdamW state, data position) for 100 steps; all but `control`
#    first add one vector to every output-embedding row so that mu.h_bar = 1000 (optim.gauge_shift_: a gauge
#    change, the fp32 loss is unchanged; the paper's 16M baseline reaches mu.h_bar ~ 1150 at lr 0.3).
# 3. the arms: control (no shift), baseline, z-loss 1e-4, mu-loss 1e-4, mu-centering; in bf16 and in fp32.
# Expect: in bf16 the baseline stays far above control; mu-centering equals control (it removes mu after its
# first step); z-loss pulls mu.h_bar back; in fp32 no arm separates from control. The printed tables give
# val_loss and mu.h_bar (fhs_dot_prod) per arm and eval step; evals.png draws them.
exec(open('config/oec_lr_sweep.py').read())  # the OEC architecture and optimizer at 2 x 64, Shakespeare
max_iters = 250  # 150 start steps + 100 per arm
lr_decay_iters = 250
warmup_iters = 15
learning_rate = 1e-2
eval_interval = 50
eval_iters = 8
dtype = 'bfloat16'
gauge_shift = 1000.0  # the injected mean logit mu.h_bar
start_run = dict(max_iters=150, gauge_shift=0.0)
sweep = dict(dtype=['bfloat16', 'float32'])
variants = dict(
    control=dict(gauge_shift=0.0),  # the unshifted continuation
    baseline={},
    z_loss=dict(z_loss=1e-4),  # PaLM z-loss, lambda 1e-4 as in OEC
    mu_loss=dict(mu_loss=1e-4),  # OEC mu-loss, lambda 1e-4
    mu_centering=dict(mu_centering=True),  # OEC mu-centering
)
paired_baseline = dict(variant='control')
plot_evals = ['val_loss', 'fhs_dot_prod']
