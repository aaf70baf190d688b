#!/usr/bin/env bash
# GPU check, one command on one GPU machine without internet:   bash bench/gpu.sh
# then the independent ../shared/tools/gpu_check.sh (its own budget), when it is found.
#
# Ours, in this order (each check has its own timeout; a failure only fails that check; a RESULT line is
# printed as each one finishes, and all of them again at the end, also when the script is interrupted):
#   preflight   torch with CUDA, the modules train.py imports, a C compiler + triton for torch.compile.
#               Nothing is installed: a missing pure-Python module is named with the `pip install --no-deps`
#               line that would not touch the machine's CUDA torch.
#   data        generated here: random tokens (GPT-2 / GPT-SW3 vocabularies) and this repo's README bytes.
#   parity      GPU vs CPU losses for 6 fp32 steps (tf32 off on both), base model and every paper feature.
#   mfu_124m    GPT-2 124M, bf16 autocast + compile, batch 16 x 1024; the first log intervals (compile,
#   mfu_356m    warm-up) are dropped; tokens/s between log points that read the loss back (synchronised).
#               GPT-SW3 356M shape, batch 8 x 2048, likewise. MFU against model.peak_flops (logged).
#   ddp/fsdp    torchrun on min(2, #GPUs) GPUs, gradient accumulation, fp32 vs the 1-process run, and the
#               FSDP2 bf16 run vs the 1-process bf16 run (the same recipe: autocast only).
#   dcp         FSDP2 sharded (DCP) checkpoint, resumed in one process: losses equal the uninterrupted run.
#   tf32        the fp32 124M step with TF32 on vs off (INFO ratio).
#   vs_loop     bench/bench_train.py on the GPU: train.py vs the simplest loop over our GPT vs HF GPT-2, every
#               arm bf16 autocast + compile on the same batches (like with like).
# About 5 min on an H100/H200 (budget 300 s), then gpu_check.sh (budget 480 s): ~13-14 min in all.
# Env: PY (python), BUDGET_S (our checks, default 300 s; checks that no longer fit are SKIPped),
#      GPU_CHECK (path of gpu_check.sh, default ../shared/tools/gpu_check.sh; GPU_CHECK=none skips it),
#      GC_BUDGET_S (its budget, default 480), WORK (scratch, default /tmp/gpu_sh), OUT (results copied there),
#      DRYRUN=1: rehearse the script on a CPU box (device cpu, tiny MFU shapes, 2 gloo ranks, no compile).
set -uo pipefail
T0=$SECONDS
cd "$(dirname "$0")/.."
REPO=$PWD
PY=${PY:-$(command -v python3 || command -v python)}
BUDGET_S=${BUDGET_S:-300}
WORK=${WORK:-${TMPDIR:-/tmp}/gpu_sh}
rm -rf "$WORK"; mkdir -p "$WORK/runs" "$WORK/data"
SUM=$WORK/results.txt; : > "$SUM"
export PYTHONUNBUFFERED=1
DRY=${DRYRUN:-0}
if [ "$DRY" = 1 ]; then DEV=cpu; else DEV=cuda; fi
left() { echo $(( BUDGET_S - (SECONDS - T0) )); }
say() { echo "$*" | tee -a "$SUM"; }
finish() {
  echo; echo "=========== bench/gpu.sh results ($(( SECONDS - T0 )) s) ==========="; cat "$SUM"
  if [ -n "${OUT:-}" ]; then mkdir -p "$OUT"; cp "$SUM" "$OUT/gpu_sh_results.txt"
    for f in "$WORK"/runs/*.log; do tail -n 40 "$f" > "$OUT/$(basename "$f")" 2>/dev/null; done; fi
}
trap finish EXIT

# run NAME LIMIT CMD...: run CMD under a timeout (at most the budget left), log to runs/NAME.log, rc to runs/NAME.rc
run() {
  local name=$1 lim=$2; shift 2
  local l; l=$(left); [ "$lim" -gt "$l" ] && lim=$l
  if [ "$lim" -lt 20 ]; then echo "skipped: budget" > "$WORK/runs/$name.log"; echo 125 > "$WORK/runs/$name.rc"; return; fi
  timeout -k 10 "$lim" "$@" > "$WORK/runs/$name.log" 2>&1
  echo $? > "$WORK/runs/$name.rc"
}
train() { local name=$1 lim=$2; shift 2; run "$name" "$lim" "$PY" train.py --out_dir="$WORK/runs/$name" "$@"; }
trainN() { local name=$1 np=$2 lim=$3; shift 3
  run "$name" "$lim" "$PY" -m torch.distributed.run --standalone --nproc_per_node="$np" train.py \
    --out_dir="$WORK/runs/$name" "$@"; }
check() { "$PY" "$WORK/check.py" "$WORK/runs" "$@" | tee -a "$SUM"; }
par() { if [ "$DRY" = 1 ]; then "$@"; else "$@" & fi; }  # concurrent on a GPU box; one at a time in a dry run

cat > "$WORK/check.py" <<'PYEOF'
"""python check.py RUNS <kind> <id> args...: one RESULT line about train.py run folders in RUNS."""
import json, math, statistics, sys
from pathlib import Path
runs, kind, cid, args = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4:]

def say(status, msg):
    print(f"RESULT {cid:<26} {status:<4} {msg}", flush=True)

def ok(name):  # the run exited 0, else say why not
    rc = int((runs / f"{name}.rc").read_text() or 1) if (runs / f"{name}.rc").exists() else None
    summary = runs / name / "summary.json"
    if rc == 0 and (not summary.exists() or json.loads(summary.read_text()).get("finished")):
        return True
    if rc == 0:
        say("FAIL", f"{name}: stopped before max_iters (signal or divergence: see {runs / name}.log)")
        return False
    log = (runs / f"{name}.log").read_text(errors="replace").splitlines() if (runs / f"{name}.log").exists() else []
    why = [ln for ln in log if any(k in ln for k in ("Error", "train.py: ", "skipped"))][-1:] or [f"exit {rc}"]
    say("SKIP" if rc in (None, 125) else "FAIL",
        f"{name}: {'timeout' if rc in (124, 137) else why[0].strip()[:200]}")
    return False

def losses(name):
    recs = [json.loads(ln) for ln in (runs / name / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in recs if "loss" in r}

if kind == "cmp":  # cmp id A B rtol: per-step training losses of A vs B
    a, b, tol = args[0], args[1], float(args[2])
    if ok(a) and ok(b):
        la, lb = losses(a), losses(b)
        steps = sorted(set(la) & set(lb))
        d = max((abs(la[s] - lb[s]) / abs(lb[s]) for s in steps), default=float("inf"))
        say("PASS" if steps and d <= tol else "FAIL",
            f"{a} vs {b}: max rel loss diff {d:.2e} over {len(steps)} steps (tol {tol:g})")
elif kind == "mfu":  # mfu id A: median tokens/s and MFU after the first two log records
    a = args[0]
    if ok(a):
        recs = [json.loads(ln) for ln in (runs / a / "metrics.jsonl").read_text().splitlines()]
        logs = [r for r in recs if "loss" in r][2:]
        cfg = json.loads((runs / a / "config.json").read_text())
        if not logs:
            say("FAIL", f"{a}: fewer than 3 log records")
        else:
            mfu = statistics.median(r["mfu"] for r in logs)
            tok = statistics.median(r["tokens_per_sec"] for r in logs)
            say("PASS" if mfu >= 0.5 else "WARN",
                f"MFU {mfu:.1%} (target >= 50%), {tok:,.0f} tokens/s, {cfg['num_params'] / 1e6:.0f}M params, "
                f"{cfg['tokens_per_step']:,} tokens/step, peak {max(r['peak_mem_mb'] for r in logs) / 1024:.1f} "
                f"GiB, {len(logs)} logs, vocab {cfg['model_args']['vocab_size']}; peak used: "
                f"{cfg.get('peak_flops_source', '?')}")
elif kind == "rc":
    if ok(args[0]):
        say("PASS", f"{args[0]} exit 0")
PYEOF

# ------------------------------------------------------------------------------------------- preflight
PRE=$("$PY" - "$DEV" <<'PYEOF' 2>&1
import importlib.util, shutil
need = ["numpy", "tqdm", "sentencepiece"]  # train.py / data.py imports
optional = {"safetensors": "HF export", "transformers": "the HF arm of vs_loop", "triton": "torch.compile"}
miss = [m for m in need if importlib.util.find_spec(m) is None]
opt = [f"{m} ({why})" for m, why in optional.items() if importlib.util.find_spec(m) is None]
import sys
if importlib.util.find_spec("torch") is None:
    print(f"FAIL torch is not importable by {sys.executable}: set PY=<the python with the machine's CUDA torch> "
          "(this script never installs torch)"); raise SystemExit
import torch
msg = f"torch {torch.__version__}, cuda {torch.version.cuda}"
if sys.argv[1] == "cpu":
    print(f"PASS {msg}: DRYRUN on CPU"); raise SystemExit
if not torch.cuda.is_available():
    print(f"FAIL {msg}: torch.cuda.is_available() is False (this script never installs torch)"); raise SystemExit
sys.path.insert(0, ".")
from model import peak_flops
msg += (f", {torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}, bf16 {torch.cuda.is_bf16_supported()}, "
        f"peak for MFU: {peak_flops('cuda:0')[1]}, C compiler {shutil.which('gcc') or shutil.which('cc') or 'MISSING'}")
if opt:
    msg += f"; optional missing: {', '.join(opt)}"
if miss:
    print(f"FAIL {msg}; missing: {', '.join(miss)}: pip install --no-deps {' '.join(miss)} (never reinstall torch)")
else:
    print(("PASS " if "MISSING" not in msg and "triton" not in msg else "WARN ") + msg)
PYEOF
)
say "RESULT preflight                   $PRE"
case "$PRE" in PASS*|WARN*) ;; *) exit 1;; esac
COMPILE=True; case "$PRE" in *MISSING*|*triton*|*DRYRUN*) COMPILE=False;; esac
NGPU=$("$PY" -c "import torch; print(torch.cuda.device_count())")
NP=$(( NGPU >= 2 || DRY == 1 ? 2 : 1 ))

# ------------------------------------------------------------------------------------------------ data
"$PY" - "$WORK/data" <<'PYEOF' > "$WORK/runs/data.log" 2>&1
import pickle, sys
from pathlib import Path
import numpy as np
root = Path(sys.argv[1])
def write(name, ids, vocab):
    d = root / name; d.mkdir(parents=True, exist_ok=True)
    n = len(ids) * 9 // 10
    ids[:n].astype(np.uint16).tofile(d / "train.bin"); ids[n:].astype(np.uint16).tofile(d / "val.bin")
    pickle.dump({"vocab_size": vocab}, open(d / "meta.pkl", "wb"))
text = b"".join(p.read_bytes() for p in sorted(Path(".").glob("*.md")) + sorted(Path(".").glob("*.py")))
write("text", np.frombuffer(text, dtype=np.uint8), 256)  # bytes of this repo: a real-text parity set
g = np.random.default_rng(0)
write("gpt2", g.integers(0, 50257, 12_000_000), 50257)
write("sw3", g.integers(0, 64000, 12_000_000), 64000)
print("data ok")
PYEOF
grep -q "data ok" "$WORK/runs/data.log" && say "RESULT data                       PASS text/gpt2/sw3 in $WORK/data" \
  || { say "RESULT data                       FAIL $(tail -1 "$WORK/runs/data.log")"; exit 1; }
D="--data_root=$WORK/data"

# --------------------------------------------------------------------------- parity: GPU vs CPU, fp32
SMALL="$D --dataset=text --n_layer=4 --n_head=4 --n_embd=128 --block_size=128 --batch_size=8 --max_iters=6
 --eval_interval=6 --eval_iters=2 --log_interval=1 --warmup_iters=2 --lr_decay_iters=6 --learning_rate=3e-3
 --min_lr=3e-4 --sample_tokens=0 --dtype=float32 --tf32=False --vocab_multiple=1"
FEAT="--pos=rope --mlp=swiglu --qk_norm=True --init=xavier --tie_embeddings=False --logit_softcap=30 --n_kv_head=2
 --bias=False --z_loss=1e-4 --mu_loss=1e-4 --mu_centering=True --optimizer=coupled_adam --norm=dyisru_sp"
# shellcheck disable=SC2086
{
OMP_NUM_THREADS=4 par train cpu_base 150 $SMALL --device=cpu  # CPU references: few threads, the box is shared
OMP_NUM_THREADS=4 par train cpu_feat 150 $SMALL $FEAT --device=cpu
par train gpu_base 150 $SMALL --device=$DEV
par train gpu_feat 150 $SMALL $FEAT --device=$DEV
wait
}
check cmp parity_fp32_base gpu_base cpu_base 1e-4
check cmp parity_fp32_features gpu_feat cpu_feat 1e-4

# ------------------------------------------------------------------------------------ MFU, bf16 + compile
MFU="$D --device=$DEV --dtype=bfloat16 --compile=$COMPILE --eval_interval=1000000 --eval_iters=1 --log_interval=10
 --sample_tokens=0 --warmup_iters=10 --learning_rate=6e-4 --min_lr=6e-5 --always_save_checkpoint=False"
S124="--model_preset=gpt2 --batch_size=16 --block_size=1024 --max_iters=60"
S356="--model_preset=gpt-sw3-356m --batch_size=8 --block_size=2048 --max_iters=40"
SLOOP="--n_layer=12 --n_head=12 --n_embd=768 --block_size=1024 --batch_size=8 --steps=10 --warmup=3"
if [ "$DRY" = 1 ]; then  # tiny shapes: only the script's logic is rehearsed
  S124="--n_layer=2 --n_head=2 --n_embd=64 --block_size=64 --batch_size=4 --max_iters=40"; S356=$S124
  SLOOP="--n_layer=2 --n_head=2 --n_embd=64 --block_size=64 --batch_size=4 --steps=3 --warmup=1"
fi
# shellcheck disable=SC2086
train mfu_124m 200 $MFU --dataset=gpt2 $S124 --lr_decay_iters=60
check mfu mfu_124m_bf16_compile mfu_124m
# shellcheck disable=SC2086
train mfu_356m 200 $MFU --dataset=sw3 $S356 --lr_decay_iters=40
check mfu mfu_356m_bf16_compile mfu_356m
# ------------------------------------------------------------------- torchrun DDP / FSDP2, accumulation
DIST="$SMALL --device=$DEV --gradient_accumulation_steps=4 --tie_embeddings=True --mu_loss=1e-2 --mu_centering=True
 --eval_interval=3 --keep_last_k=3"
B16="--dtype=bfloat16"
# shellcheck disable=SC2086
{
par train one_f32 150 $DIST
par train one_b16 150 $DIST $B16
par trainN ddp_f32 "$NP" 150 $DIST --parallelism=ddp
par trainN fsdp_f32 "$NP" 150 $DIST --parallelism=fsdp
par trainN fsdp_b16 "$NP" 150 $DIST $B16 --parallelism=fsdp
par trainN fsdp_dcp "$NP" 150 $DIST --parallelism=fsdp --checkpoint_format=dcp
wait
}
check cmp ddp_equals_one_process ddp_f32 one_f32 1e-4
check cmp fsdp_equals_one_process fsdp_f32 one_f32 1e-4
check cmp fsdp_bf16_same_recipe fsdp_b16 one_b16 5e-3
# the DCP checkpoint of step 3, resumed in one process, continues like the uninterrupted run
if [ -f "$WORK/runs/fsdp_dcp/ckpt_0000003.pt" ]; then
  mkdir -p "$WORK/runs/dcp_resume"
  cp "$WORK/runs/fsdp_dcp/ckpt_0000003.pt" "$WORK/runs/dcp_resume/ckpt.pt"
  cp -r "$WORK/runs/fsdp_dcp/ckpt_0000003.dcp" "$WORK/runs/dcp_resume/"
  # shellcheck disable=SC2086
  train dcp_resume 120 $DIST --checkpoint_format=dcp --init_from=resume
  check cmp dcp_resume_one_process dcp_resume fsdp_dcp 1e-4
else say "RESULT dcp_resume_one_process     FAIL no step-3 sharded checkpoint from fsdp_dcp"; fi

# ------------------------------------------------------------- TF32 and the loop vs plain loops (last: least)
# F13: the fp32 step with TF32 on (the default on CUDA) vs off, 124M shape, eager
TF="$D --device=$DEV --dtype=float32 --eval_interval=1000000 --eval_iters=1 --log_interval=5 --sample_tokens=0
 --warmup_iters=5 --always_save_checkpoint=False --dataset=gpt2 $S124 --max_iters=20 --lr_decay_iters=20"
# shellcheck disable=SC2086
{ train fp32_tf32 120 $TF --tf32=True; train fp32_notf32 120 $TF --tf32=False; }
"$PY" - "$WORK/runs" <<'PYEOF' | tee -a "$SUM"
import json, statistics, sys
from pathlib import Path
def tok(name):
    p = Path(sys.argv[1]) / name / "metrics.jsonl"
    recs = [json.loads(ln) for ln in p.read_text().splitlines()] if p.exists() else []
    logs = [r["tokens_per_sec"] for r in recs if "loss" in r][1:]
    return statistics.median(logs) if logs else None
on, off = tok("fp32_tf32"), tok("fp32_notf32")
print(f"RESULT {'tf32_fp32_step':<26} " + (f"INFO tf32 on/off {on / off:.2f}x ({on:,.0f} vs {off:,.0f} tokens/s)"
                                         if on and off else "FAIL a run did not log (see runs/fp32_tf32*.log)"))
PYEOF
# shellcheck disable=SC2086
run vs_loop 150 "$PY" bench/bench_train.py --device=$DEV --dtype=bfloat16 --compile="$COMPILE" --dataset=text \
  --data_root="$WORK/data" $SLOOP --rounds=1
if [ "$(cat "$WORK/runs/vs_loop.rc")" = 0 ]; then
  say "RESULT vs_loop                    INFO $(grep -E 'ours/this' "$WORK/runs/vs_loop.log" | tr -s ' ' | paste -sd';')"
else say "RESULT vs_loop                    FAIL $(grep -E 'Error' "$WORK/runs/vs_loop.log" | tail -1 | cut -c1-200)"; fi

# --------------------------------------------------------------------------- the independent check
GC=${GPU_CHECK:-$REPO/../shared/tools/gpu_check.sh}
if [ "$GC" = none ] || [ "$DRY" = 1 ]; then say "RESULT gpu_check.sh               SKIP GPU_CHECK=none or DRYRUN"
elif [ -f "$GC" ]; then
  say "RESULT gpu_check.sh               INFO running $GC: its CHECK lines follow"
  BUDGET_S=${GC_BUDGET_S:-480} GC_WORK="$WORK/gpu_check" OUT="${OUT:-}" PY="$PY" bash "$GC" 2>&1 \
    | tee "$WORK/runs/gpu_check.log" | grep --line-buffered "^CHECK"
  cat "$WORK/gpu_check/summary.txt" >> "$SUM" 2>/dev/null
else say "RESULT gpu_check.sh               SKIP not found at $GC (set GPU_CHECK=<path>)"; fi
