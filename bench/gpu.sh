#!/usr/bin/env bash
# GPU check (issue 5), one GPU, ~6 min on an H100: train.py with bf16 + torch.compile + SDPA on
#   1. the GPT-2 124M shape   (model_preset=gpt2, block 1024, batch 16)
#   2. the GPT-SW3 356M shape (model_preset=gpt-sw3-356m, block 2048, batch 8)
#   3. a 1-GPU DDP smoke run and a 1-GPU FSDP2 smoke run under torchrun --nproc_per_node=1
# and prints tokens/s, MFU (model.estimate_mfu: the device's bf16 peak) and peak memory per configuration.
# Data: random tokens in nanoGPT's layout (throughput does not depend on the text; nothing is downloaded).
# Usage: bash bench/gpu.sh            (PY=/path/to/python to pick the interpreter)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python}
OUT=${OUT:-out-gpu-bench}
rm -rf "$OUT"

"$PY" - <<'PYEOF'
import pickle, pathlib, numpy as np
for name, vocab in (("bench_gpt2", 50257), ("bench_sw3", 64000)):  # both fit uint16 (nanoGPT layout)
    d = pathlib.Path("data") / name
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", 20_000_000), ("val", 1_000_000)):
        rng.integers(0, vocab, n, dtype=np.uint16).tofile(d / f"{split}.bin")
    pickle.dump({"vocab_size": vocab}, open(d / "meta.pkl", "wb"))
PYEOF

COMMON=(--device=cuda --dtype=bfloat16 --vocab_multiple=64 --eval_interval=1000000 --eval_iters=1
        --log_interval=10 --sample_tokens=0 --warmup_iters=10 --always_save_checkpoint=False)

report() {  # median tokens/s and MFU over the logged steps after the compile warm-up, and peak memory
  "$PY" - "$1" "$2" <<'PYEOF'
import json, statistics, sys
recs = [json.loads(l) for l in open(f"{sys.argv[1]}/metrics.jsonl")]
logs = [r for r in recs if "loss" in r][2:]
print(f"RESULT {sys.argv[2]:<28} {statistics.median(r['tokens_per_sec'] for r in logs):>10,.0f} tokens/s  "
      f"MFU {statistics.median(r['mfu'] for r in logs):6.1%}  peak {max(r['peak_mem_mb'] for r in logs) / 1024:5.1f} GiB  "
      f"final loss {logs[-1]['loss']:.3f}")
PYEOF
}

"$PY" train.py "${COMMON[@]}" --out_dir="$OUT/gpt2_124m" --dataset=bench_gpt2 --model_preset=gpt2 \
  --batch_size=16 --block_size=1024 --max_iters=200 --lr_decay_iters=200 --compile=True
"$PY" train.py "${COMMON[@]}" --out_dir="$OUT/gptsw3_356m" --dataset=bench_sw3 --model_preset=gpt-sw3-356m \
  --batch_size=8 --block_size=2048 --max_iters=150 --lr_decay_iters=150 --compile=True
"$PY" -m torch.distributed.run --standalone --nproc_per_node=1 train.py "${COMMON[@]}" --parallelism=ddp \
  --out_dir="$OUT/ddp_smoke" --dataset=bench_gpt2 --model_preset=gpt2 --batch_size=16 --block_size=1024 \
  --gradient_accumulation_steps=2 --max_iters=40 --lr_decay_iters=40 --compile=False
"$PY" -m torch.distributed.run --standalone --nproc_per_node=1 train.py "${COMMON[@]}" --parallelism=fsdp \
  --out_dir="$OUT/fsdp_smoke" --dataset=bench_gpt2 --model_preset=gpt2 --batch_size=16 --block_size=1024 \
  --max_iters=40 --lr_decay_iters=40 --compile=False

echo "== $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1), torch $("$PY" -c 'import torch; print(torch.__version__)')"
report "$OUT/gpt2_124m" "gpt2 124M bf16+compile"
report "$OUT/gptsw3_356m" "gpt-sw3 356M bf16+compile"
report "$OUT/ddp_smoke" "ddp 1 GPU (eager)"
report "$OUT/fsdp_smoke" "fsdp2 1 GPU (eager)"
