"""
NER fine-tuning and evaluation in the manner of nerblackbox (Stollenwerk 2023, "nerblackbox: A High-level Library
for Named Entity Recognition in Python", arXiv:2312.04306; code github.com/flxst/nerblackbox), with adaptive
fine-tuning (Stollenwerk 2022, arXiv:2202.02617, as implemented in nerblackbox's
nerblackbox/modules/ner_training/callbacks/custom_early_stopping.py; here AdaptiveFineTuning) as the
default. The tagger (backbones, chunking, inference) is in nertagger.py; file formats in nerdata.py; tag
schemes and scores in nertags.py; the BERT encoder and its WordPiece tokenizer in bert.py.

    python ner.py train --train=train.conll --val=dev.conll --test=test.conll --encoder=DIR --out_dir=out-ner
    python ner.py evaluate --model=out-ner/model --data=test.conll --out=out-eval
    python ner.py predict --model=out-ner/model --input=in.txt --output=out.jsonl [--format=labelstudio|doccano]

`python ner.py COMMAND -h` lists the keys of a command with their defaults. The annotation commands are in
annotate.py (convert) and agreement.py (agreement, merge, resolve).
"""
import json
import math
import shutil
import sys
import time
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import torch
from torch.nn import functional as F
from tqdm import tqdm

import annotate
import nerdata
import nertags
import parallel
from bert import BertForTokenClassification, WordPieceTokenizer
from configurator import check_output_path, configure_command
from losses import IGNORE_INDEX
from nerdata import Example, Issues
from nertagger import Tagger, collate, encode, load_gpt_backbone, predict, predict_on_file, read_texts, resolve_device

TRAIN_DEFAULTS = dict(
    train="", val="", test="",  # data files: CoNLL, pretokenized CSV or standard JSONL (see --format)
    format="auto",  # auto | conll | csv | jsonl
    token_column=-1, tag_column=-1,  # [-1, inf) CoNLL columns, 0-based; -1 = detected from the content (printed)
    repair_bio=False,  # BIO files: turn an I-X after neither B-X nor I-X into B-X (always counted in issues)
    encoder="",  # HF BERT folder (config.json, model.safetensors|pytorch_model.bin, vocab.txt)
    backbone="",  # 'gpt:<out_dir>' to fine-tune our own GPT checkpoint instead of --encoder
    tokenizer="",  # tokenizer spec for a GPT backbone when its run folder does not name one
    out_dir="out-ner",  # run folder: config.json, run<k>/, report.json, report.txt, model/ (the best run)
    overwrite=False,  # True: replace the earlier run in out_dir (its model too); False: stop if out_dir holds one
    preset="adaptive",  # adaptive | original | stable (nerblackbox's modules/training_config/preset.py)
    annotation_scheme="auto",  # auto | io | bio | bilou: the scheme the model is trained on
    max_epochs=0,  # [0, inf) 0 = the preset's (adaptive 250, original 5, stable 20)
    # adaptive fine-tuning (nerblackbox's defaults): linear warm-up, constant lr until val loss stops improving,
    # then a linear cool-down; stop when the cool-down brings no new best (AdaptiveFineTuning)
    lr_max=2e-5,  # (0, inf) peak learning rate
    warmup_epochs=2,  # [0, inf) linear warm-up 0 -> lr_max
    cooldown_epochs=7,  # [0, inf) linear decay lr_max -> 0 after the first epoch without a new best val loss
    patience=0,  # [0, inf) extra epochs without improvement before the cool-down starts
    min_delta=0.0,  # [0, inf) a val loss must beat the best by more than this to count as an improvement
    cooldown_restarts=True,  # a new best during the cool-down restarts the constant phase (warm restart)
    weight_decay=0.01,  # [0, inf) AdamW, not on biases and norm weights (nerblackbox)
    grad_clip=0.0,  # [0, inf) 0 = off, as in nerblackbox
    batch_size=16,  # [1, inf) chunks per optimizer step
    max_seq_length=128,  # [3, inf) sub-tokens per chunk, [CLS]/[SEP] included; a longer text is cut into chunks
    group_by_length=True,  # batches of similar length (less padding); False = plain random batches
    chunk_overlap=32,  # [0, inf) sub-tokens shared by consecutive chunks of a long text (nerblackbox: 0)
    final_model="last",  # last = the model after the last epoch (the paper's code) | best = lowest val loss
    val_loss_mean="batch",  # batch = mean of per-batch mean losses (the paper's code) | token = over all words
    val_split=0.1,  # (0, 1) fraction of --train held out (seeded shuffle) as validation when --val is not given
    train_fraction=1.0, val_fraction=1.0,  # (0, 1] subsets, for dataset-size studies (Stollenwerk 2022)
    subset="first",  # first = the first max(1, int(x * N)) examples (the paper's code) | random = seeded sample
    seed=42,  # [0, inf) run k uses seed + k
    multiple_runs=1,  # [1, inf) runs with seeds seed, seed + 1, ...; results are mean +- standard error
    save_model=True,  # write the best run's model to out_dir/model
    device="auto",  # auto (cuda if available, else cpu) | cpu | cuda | cuda:N
)
EVALUATE_DEFAULTS = dict(
    model="",  # a model folder written by `ner.py train` (out_dir/model)
    data="",  # the data file to evaluate on: CoNLL, pretokenized CSV or standard JSONL
    out="out-ner-eval",  # folder for metrics.json and predictions.tsv
    format="auto",  # auto | conll | csv | jsonl
    token_column=-1, tag_column=-1,  # [-1, inf) CoNLL columns, 0-based; -1 = detected from the content (printed)
    repair_bio=False,  # BIO files: turn an I-X after neither B-X nor I-X into B-X (always counted in issues)
    batch_size=32,  # [1, inf) chunks per forward pass
    device="auto",  # auto (cuda if available, else cpu) | cpu | cuda | cuda:N
)
PREDICT_DEFAULTS = dict(
    model="",  # a model folder written by `ner.py train` (out_dir/model)
    input="",  # in.txt (one text per line) or in.jsonl (standard JSONL; its tags are dropped)
    output="",  # the file to write
    format="jsonl",  # jsonl (standard JSONL with scores) | labelstudio (import JSON with predictions) | doccano
    batch_size=32,  # [1, inf) chunks per forward pass
    device="auto",  # auto (cuda if available, else cpu) | cpu | cuda | cuda:N
)


# -----------------------------------------------------------------------------
# evaluation

def _map_tags(examples: list[Example], scheme: str, labels: list[str], issues: Issues, name: str) -> list:
    """Tags in the model's scheme; labels unseen in training are counted and kept (they cost recall)."""
    source = nertags.detect_scheme([ex.tags for ex in examples])
    known = set(labels)
    out = []
    for i, ex in enumerate(examples):
        tags = nertags.convert(ex.tags, source, scheme)
        for w, t in zip(ex.words, tags):
            if t not in known:
                issues.add(f"label in {name} unseen in training", f"{name} item {i + 1}: {w!r} {t}")
        out.append(tags)
    return out


# -----------------------------------------------------------------------------
# the fine-tuning schedule

FINE_TUNING_PRESETS = {  # nerblackbox presets (nerblackbox, arXiv 2312.04306); lr_warmup_epochs = 2 applies to all
    "adaptive": dict(lr_schedule="constant", early_stopping=True, max_epochs=250),
    "original": dict(lr_schedule="linear", early_stopping=False, max_epochs=5),
    "stable": dict(lr_schedule="linear", early_stopping=False, max_epochs=20),
}


class AdaptiveFineTuning:
    """Adaptive fine-tuning (arXiv 2202.02617, nerblackbox CustomEarlyStopping + HF LambdaLR schedules), per step.

        sched = AdaptiveFineTuning(optimizer, steps_per_epoch, **FINE_TUNING_PRESETS['adaptive'])
        for each batch: loss.backward(); optimizer.step(); sched.step()
        after each epoch: if sched.end_epoch(val_loss): break      # sched.improved -> save best checkpoint

    lr_schedule='constant' (adaptive): linear warmup 0 -> lr_max over warmup_epochs, then constant; the first
    epoch without a new best val loss (wait == patience + 1) starts a linear cool-down lr_max -> 0 over
    cooldown_epochs; a new best during the cool-down restarts the constant LR (cooldown_restarts); training stops
    when wait reaches patience + cooldown_epochs + 1 (= 8 with the defaults), or after max_epochs.
    lr_schedule='linear' (original / stable, early_stopping=False): warmup over warmup_epochs, then linear decay
    to 0 at the end of max_epochs (HF get_linear_schedule_with_warmup over max_epochs * steps_per_epoch).
    As in HF's LambdaLR, the first step runs at lr = 0 when warmup_epochs > 0. A new best needs
    val_loss < best - min_delta (PyTorch Lightning EarlyStopping); a non-finite val_loss stops training.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, steps_per_epoch: int, lr_max: float = 2e-5,
                 warmup_epochs: int = 2, cooldown_epochs: int = 7, patience: int = 0, min_delta: float = 0.0,
                 max_epochs: int = 250, cooldown_restarts: bool = True, lr_schedule: str = "constant",
                 early_stopping: bool = True):
        if lr_schedule not in ("constant", "linear"):
            raise ValueError(f"unknown lr_schedule {lr_schedule!r}: use 'constant' (adaptive) or 'linear'")
        if steps_per_epoch < 1 or max_epochs < 1 or min(warmup_epochs, cooldown_epochs, patience) < 0:
            raise ValueError(f"AdaptiveFineTuning: need steps_per_epoch >= 1 (got {steps_per_epoch}), max_epochs "
                             f">= 1 (got {max_epochs}) and warmup/cooldown epochs, patience >= 0")
        self.optimizer, self.steps_per_epoch, self.lr_max = optimizer, steps_per_epoch, lr_max
        self.warmup_epochs, self.cooldown_epochs, self.max_epochs = warmup_epochs, cooldown_epochs, max_epochs
        self.min_delta, self.cooldown_restarts = min_delta, cooldown_restarts
        self.lr_schedule, self.early_stopping = lr_schedule, early_stopping
        self.stop_wait = patience + cooldown_epochs + 1  # PL EarlyStopping patience as nerblackbox sets it [= 8]
        self.cooldown_wait = patience + 1  # wait count that starts the cool-down (= stop_wait - cooldown_epochs)
        self.use_cooldown = early_stopping and lr_schedule == "constant" and cooldown_epochs > 0
        self.best, self.wait, self.in_cooldown, self.epoch, self.improved = math.inf, 0, False, 0, False
        self.phase = "warmup_linear" if lr_schedule == "linear" else "warmup_constant"
        self.phase_step = 0  # optimizer steps since the current LambdaLR schedule was created
        self._apply_lr()

    def _lr_factor(self) -> float:
        """HF schedule lambdas (transformers.optimization) at step phase_step of the current schedule."""
        k, S = self.phase_step, self.steps_per_epoch
        warmup = self.warmup_epochs * S
        if self.phase in ("warmup_constant", "warmup_linear") and k < warmup:
            return k / max(1, warmup)
        if self.phase == "warmup_linear":
            total = self.max_epochs * S
            return max(0.0, (total - k) / max(1, total - warmup))
        if self.phase == "cooldown":
            total = self.cooldown_epochs * S
            return max(0.0, (total - k) / max(1, total))
        return 1.0  # warmup_constant after warmup, or "constant" after a restart

    def _apply_lr(self) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_max * self._lr_factor()

    def get_lr(self) -> float:
        return self.lr_max * self._lr_factor()

    def step(self) -> None:
        """Call after every optimizer.step()."""
        self.phase_step += 1
        self._apply_lr()

    def _start(self, phase: str) -> None:
        self.phase, self.phase_step = phase, 0
        self._apply_lr()

    def end_epoch(self, val_loss: float) -> bool:
        """Record the epoch's validation loss; returns True when training should stop."""
        self.epoch += 1
        if not math.isfinite(val_loss):
            return True  # PL EarlyStopping(check_finite=True)
        self.improved = val_loss < self.best - self.min_delta
        if self.improved:
            self.best, self.wait = val_loss, 0
        else:
            self.wait += 1
        if self.use_cooldown and self.wait == self.cooldown_wait:  # first epoch(s) without improvement
            self._start("cooldown")
            self.in_cooldown = True
            if not self.cooldown_restarts:
                self.min_delta = math.inf  # nerblackbox: no later epoch may count as an improvement
        elif self.use_cooldown and self.cooldown_restarts and self.in_cooldown and self.wait == 0:
            self._start("constant")  # improvement during the cool-down: warm restart, no warm-up
            self.in_cooldown = False
        return (self.early_stopping and self.wait >= self.stop_wait) or self.epoch >= self.max_epochs

    def state_dict(self) -> dict:
        keys = ("best", "wait", "in_cooldown", "epoch", "improved", "phase", "phase_step", "min_delta")
        return {k: getattr(self, k) for k in keys}

    def load_state_dict(self, state: dict) -> None:
        for k, v in state.items():
            setattr(self, k, v)
        self._apply_lr()


# -----------------------------------------------------------------------------
# training


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float, device: str) -> torch.optim.AdamW:
    """AdamW as nerblackbox: decay on weight matrices, not on biases and norm weights. The fused kernel
    (CPU and CUDA) is ~5% faster per step than the default foreach one."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, fused=torch.device(device).type in ("cpu", "cuda"))


def train_batches(lengths: list[int], batch_size: int, gen: torch.Generator, group_by_length: bool) -> list[list[int]]:
    """One epoch of shuffled batches. group_by_length (HF Trainer's LengthGroupedSampler idea): sort each
    random mega-batch of 50 batches by length before cutting it, then shuffle the batches: less padding,
    the same batch size and still random batches."""
    order = torch.randperm(len(lengths), generator=gen).tolist()
    if group_by_length:
        mega = 50 * batch_size
        order = [i for m in range(0, len(order), mega)
                 for i in sorted(order[m:m + mega], key=lambda i: -lengths[i])]
    batches = [order[b:b + batch_size] for b in range(0, len(order), batch_size)]
    if group_by_length:
        batches = [batches[k] for k in torch.randperm(len(batches), generator=gen).tolist()]
    return batches


def mixed_precision(device: str | torch.device) -> AbstractContextManager:
    """The precision of the fine-tuning forward: on CUDA bf16 autocast (matmuls in bf16, the loss on fp32 logits)
    and TF32 for the matmuls left in fp32, as train.py's; on CPU fp32 (autocast there would be slower)."""
    device_type = torch.device(device).type
    parallel.set_tf32(device_type, True)
    return torch.autocast("cuda", dtype=torch.bfloat16) if device_type == "cuda" else nullcontext()


def _val_loss(model, chunks: list[dict], pad: int, batch_size: int, device, mean: str = "batch") -> float:
    """Validation cross-entropy. mean='batch': the mean over batches of each batch's mean over its labelled
    words, as the paper's code (nerblackbox NerModelEvaluation: np.stack(batch losses).mean()); the last, smaller
    batch weighs as much as a full one. mean='token': the mean over all labelled words of the set."""
    model.eval()
    total, n, batch_means = 0.0, 0, []
    with torch.no_grad():
        for i in range(0, len(chunks), batch_size):
            idx, mask, labels = collate(chunks[i:i + batch_size], pad, device)
            with mixed_precision(device):
                logits = model(idx, mask)
            loss = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), reduction="sum").item()
            words = (labels != IGNORE_INDEX).sum().item()
            total, n = total + loss, n + words
            if words:
                batch_means.append(loss / words)
    if mean == "batch":
        return sum(batch_means) / max(len(batch_means), 1)
    return total / max(n, 1)


def train_run(cfg: dict, model, tokenizer, train_chunks: list[dict], val_chunks: list[dict], seed: int,
              run_dir: Path) -> dict:
    """One fine-tuning run. The model left in `model` is the one after the last epoch (final_model='last', the
    paper's code: nerblackbox v0.0.12 tests `last_model_path`) or the lowest-val-loss epoch (final_model='best',
    nerblackbox v1.0.0's ModelCheckpoint). Returns the training history and which epoch was kept."""
    device, optimizer, sched = _training_setup(cfg, model, len(train_chunks))
    steps_per_epoch = sched.steps_per_epoch
    gen = torch.Generator().manual_seed(seed)
    best_state, best_loss, best_epoch, history, step = None, math.inf, 0, [], 0
    log = open(run_dir / "metrics.jsonl", "w")
    for epoch in range(1, sched.max_epochs + 1):
        model.train()
        batches = train_batches([len(c["ids"]) for c in train_chunks], cfg["batch_size"], gen, cfg["group_by_length"])
        t0, total = time.time(), 0.0
        bar = tqdm(batches, desc=f"seed {seed} epoch {epoch}", leave=False, file=sys.stderr)
        for batch in bar:
            idx, mask, labels = collate([train_chunks[i] for i in batch], tokenizer.pad, device)
            with mixed_precision(device):
                logits = model(idx, mask)
            loss = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE_INDEX)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg["grad_clip"] > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg["grad_clip"])
            optimizer.step()
            sched.step()
            step += 1
            total += loss.item()
            bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{sched.get_lr():.2e}")
        dt, lr = time.time() - t0, sched.get_lr()  # lr of the epoch's last step
        val_loss = _val_loss(model, val_chunks, tokenizer.pad, cfg["batch_size"], device, cfg["val_loss_mean"])
        stop = sched.end_epoch(val_loss)
        rec = dict(epoch=epoch, step=step, train_loss=total / steps_per_epoch, val_loss=val_loss, lr=lr,
                   improved=sched.improved, examples_per_sec=len(train_chunks) / dt)
        history.append(rec)
        log.write(json.dumps(rec) + "\n")
        log.flush()
        print(f"seed {seed} epoch {epoch}: train_loss {rec['train_loss']:.4f} val_loss {val_loss:.4f}"
              f"{' (improved)' if sched.improved else ''} lr {rec['lr']:.2e} {rec['examples_per_sec']:.1f} ex/s")
        if val_loss < best_loss:  # the lowest-val-loss weights (nerblackbox v1.0.0: ModelCheckpoint, no min_delta)
            best_loss, best_epoch = val_loss, epoch
            if cfg["final_model"] == "best":
                best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        if stop:
            break
    log.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    kept = best_epoch if best_state is not None else len(history)
    return dict(epochs=len(history), best_val_loss=best_loss, best_epoch=best_epoch, evaluated_epoch=kept,
                history=history)


def _training_setup(cfg: dict, model, n_train_chunks: int) -> tuple[str, torch.optim.AdamW, AdaptiveFineTuning]:
    """(device, AdamW, schedule) of a run, the model moved to the device. train() calls it once before writing
    anything, so that a bad value (device, learning rate, epochs) stops the command before any write."""
    device = resolve_device(cfg["device"])
    try:
        model.to(device)
    except (RuntimeError, AssertionError) as e:  # torch without CUDA raises AssertionError
        raise ValueError(f"--device={cfg['device']!r}: {e}: use --device=cpu or auto") from None
    optimizer = make_optimizer(model, cfg["lr_max"], cfg["weight_decay"], device)
    preset = dict(FINE_TUNING_PRESETS[cfg["preset"]])
    preset["max_epochs"] = cfg["max_epochs"] or preset["max_epochs"]
    sched = AdaptiveFineTuning(optimizer, math.ceil(n_train_chunks / cfg["batch_size"]), lr_max=cfg["lr_max"],
                               warmup_epochs=cfg["warmup_epochs"], cooldown_epochs=cfg["cooldown_epochs"],
                               patience=cfg["patience"], min_delta=cfg["min_delta"],
                               cooldown_restarts=cfg["cooldown_restarts"], **preset)
    return device, optimizer, sched


def _earlier_run(out: Path) -> list[Path]:
    """What an earlier `ner.py train` left in out: config.json, report.json/.txt, model/, run<k>/."""
    names = ("config.json", "report.json", "report.txt", "model")
    return sorted([out / n for n in names if (out / n).exists()] +
                  [p for p in out.glob("run*") if p.is_dir() and p.name[3:].isdigit()]) if out.is_dir() else []


def _build(cfg: dict, num_labels: int):
    if cfg["backbone"].startswith("gpt:"):
        return load_gpt_backbone(cfg["backbone"][4:], num_labels, cfg["tokenizer"])
    if cfg["backbone"]:
        raise ValueError(f"--backbone={cfg['backbone']!r}: write gpt:<train.py out_dir>, or use --encoder=DIR")
    if not cfg["encoder"]:
        raise ValueError("give --encoder=DIR (a HF BERT folder) or --backbone=gpt:<out_dir>")
    return BertForTokenClassification.from_hf(cfg["encoder"], num_labels), WordPieceTokenizer.from_dir(cfg["encoder"])


def _positions(model) -> int:
    """How many positions the backbone's position table holds (BERT max_position_embeddings, GPT block_size)."""
    return model.gpt.config.block_size if hasattr(model, "gpt") else model.bert.config.max_position_embeddings


def _check_positions(cfg: dict, model) -> None:
    if cfg["max_seq_length"] > _positions(model):
        raise ValueError(f"--max_seq_length={cfg['max_seq_length']} is longer than the encoder's position table "
                         f"({_positions(model)} positions); set --max_seq_length={_positions(model)} or less")


def _read(path: str, cfg: dict, issues: Issues) -> tuple[list[Example], dict]:
    return nerdata.read_data(path, cfg["format"], cfg["token_column"], cfg["tag_column"], issues, cfg["repair_bio"])


def _check_shared_labels(name: str, layout: dict, types: list[str]) -> None:
    """An evaluation file whose entity types share none with the model's is an error, not an F1 of 0."""
    if not set(layout["labels"]) & set(types):
        raise ValueError(f"{name} file {layout['file']} has entity types {layout['labels'] or 'none'}, none of "
                         f"which the model knows ({types}); is it the right file, and are its columns right? "
                         f"({nerdata.layout_text(name, layout)})")


def _count_wordless(sets: dict, tags: dict, tok, issues: Issues) -> None:
    """A labelled word that yields no sub-tokens (only characters BERT deletes, e.g. U+200B) cannot be trained on
    and is predicted O: count it."""
    for s, examples in sets.items():
        for i, (ex, tg) in enumerate(zip(examples, tags[s])):
            for k, (w, t) in enumerate(zip(ex.words, tg)):
                if t != "O" and not tok.encode_word(w):
                    where = f"line {ex.lines[k]}" if ex.lines else f"item {i + 1}"
                    issues.add(f"labelled word without sub-tokens in {s} (not trained on, predicted O)",
                               f"{s} {where}: {w!r} {t}")


def _validate(cfg: dict) -> None:
    choices = dict(preset=sorted(FINE_TUNING_PRESETS), final_model=["best", "last"], val_loss_mean=["batch", "token"],
                   subset=["first", "random"], annotation_scheme=["auto", "bilou", "bio", "io"])
    for key, allowed in choices.items():
        if cfg[key] not in allowed:
            raise ValueError(f"--{key}={cfg[key]!r}: choose one of {allowed}")
    if not cfg["train"]:
        raise ValueError("give --train=FILE (and --val=FILE, or a val_split of --train)")
    check_output_path("out_dir", cfg["out_dir"], [cfg[k] for k in ("train", "val", "test") if cfg[k]])
    earlier = _earlier_run(Path(cfg["out_dir"]))
    if earlier and not cfg["overwrite"]:
        raise ValueError(f"--out_dir={cfg['out_dir']} holds an earlier run ({', '.join(p.name for p in earlier)}): "
                         f"choose another --out_dir, or pass --overwrite=True to replace it (its model too)")


def train(cfg: dict) -> dict:
    """Fine-tune cfg['multiple_runs'] times; write the run folder; return the final report. Everything is read and
    checked (files, their layouts, label sets, the encoder's position table) and every data warning printed before
    anything is written or trained."""
    _validate(cfg)
    issues, layouts = Issues(), {}
    train_ex, layouts["train"] = _read(cfg["train"], cfg, issues)
    if cfg["val"]:
        val_ex, layouts["val"] = _read(cfg["val"], cfg, issues)
    else:
        val_ex, train_ex = nerdata.split_examples(train_ex, (cfg["val_split"], 1 - cfg["val_split"]), cfg["seed"])
        if not val_ex or not train_ex:
            raise ValueError(f"--val_split={cfg['val_split']} of {len(val_ex) + len(train_ex)} sentences in "
                             f"{cfg['train']} leaves {len(val_ex)} for validation and {len(train_ex)} for training; "
                             f"give --val=FILE or a val_split that leaves both non-empty")
    test_ex, layouts["test"] = _read(cfg["test"], cfg, issues) if cfg["test"] else ([], None)
    train_ex = nerdata.subsample(train_ex, cfg["train_fraction"], cfg["seed"], cfg["subset"])
    val_ex = nerdata.subsample(val_ex, cfg["val_fraction"], cfg["seed"], cfg["subset"])
    source = nertags.detect_scheme([ex.tags for ex in train_ex])
    scheme = {"iob1": "bio", "iobes": "bilou"}.get(source, source) if cfg["annotation_scheme"] == "auto" \
        else cfg["annotation_scheme"]
    types = sorted(nertags.entity_types(train_ex))
    if not types:
        raise ValueError(f"{cfg['train']}: the training sentences hold no entity (every tag is O); "
                         f"{nerdata.layout_text('train', layouts['train'])}")
    for name in ("val", "test"):
        if layouts.get(name) is not None:
            _check_shared_labels(name, layouts[name], types)
    labels = nertags.label_list(types, scheme)
    label_id = {lab: i for i, lab in enumerate(labels)}
    sets = {"train": train_ex, "val": val_ex, "test": test_ex}
    tags = {k: _map_tags(v, scheme, labels, issues, k) for k, v in sets.items()}
    torch.manual_seed(cfg["seed"])
    model, tok = _build(cfg, len(labels))
    _check_positions(cfg, model)
    _count_wordless(sets, tags, tok, issues)
    chunks = _chunks(sets, tags, tok, cfg, label_id)
    _training_setup(cfg, model, len(chunks["train"]))  # its checks, before anything is written
    for name, layout in layouts.items():
        if layout is not None:
            print(nerdata.layout_text(name, layout))
    print(f"train {len(train_ex)}, val {len(val_ex)}, test {len(test_ex)} sentences; scheme {source} -> {scheme}; "
          f"{len(labels)} classes; evaluating the {cfg['final_model']} model of each run")
    if issues.counts:
        print(issues)  # before training, so a bad file costs nothing
    out = Path(cfg["out_dir"])
    for old in _earlier_run(out):  # only with overwrite=True (checked above): nothing of that run is mixed in
        shutil.rmtree(old) if old.is_dir() else old.unlink()
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(cfg | dict(labels=labels, scheme=scheme, source_scheme=source,
                                                            layouts=layouts, torch_version=torch.__version__,
                                                            git_commit=_git()), indent=2))
    runs = []
    for k in range(cfg["multiple_runs"]):
        seed = cfg["seed"] + k
        if k:
            torch.manual_seed(seed)
            model, tok = _build(cfg, len(labels))
            chunks = _chunks(sets, tags, tok, cfg, label_id)
        run_dir = out / f"run{k}"
        run_dir.mkdir(exist_ok=True)
        result = train_run(cfg, model, tok, chunks["train"], chunks["val"], seed, run_dir)
        tagger = Tagger(model, tok, cfg | dict(labels=labels, scheme=scheme, backbone=_backbone_kind(cfg),
                                               model_args=getattr(model, "model_args", None),
                                               tokenizer=getattr(tok, "spec", None)), cfg["device"])
        for s in ("val", "test"):
            if sets[s]:
                pred, _ = tagger.tag([ex.words for ex in sets[s]])
                result[s] = nertags.evaluate_tags(tags[s], pred, scheme, labels)
        (run_dir / "report.json").write_text(json.dumps(result, indent=2))
        if cfg["save_model"] and (not runs or result["val"]["entity.strict.micro.f1"] >
                                  max(r["val"]["entity.strict.micro.f1"] for r in runs)):
            tagger.save(out / "model")  # the best run by validation F1 serves inference (nerblackbox); replaced whole
        runs.append(result)
    report = dict(runs=[{k: v for k, v in r.items() if k != "history"} for r in runs],
                  summary=_summarize(runs), issues=issues.summary(), scheme=scheme, labels=labels, layouts=layouts,
                  final_model=cfg["final_model"])
    (out / "report.json").write_text(json.dumps(report, indent=2))
    best = max(runs, key=lambda r: r["val"]["entity.strict.micro.f1"])
    text = _summary_text(report["summary"]) + f"\n\nbest run, {'test' if 'test' in best else 'val'} set:\n" + \
        nertags.metrics_table(best.get("test", best["val"])) + ("\n\n" + str(issues) if issues.counts else "")
    (out / "report.txt").write_text(text + "\n")
    print(text)
    return report


def _chunks(sets: dict, tags: dict, tok, cfg: dict, label_id: dict) -> dict[str, list[dict]]:
    """The train and val sentences as encoded chunks (nertagger.encode), labels as class ids."""
    return {s: [c for ex, t in zip(sets[s], tags[s]) for c in encode(
        ex.words, tok, cfg["max_seq_length"], cfg["chunk_overlap"], [label_id.get(x, IGNORE_INDEX) for x in t])]
        for s in ("train", "val")}


def _summarize(runs: list[dict]) -> dict:
    """mean and standard error (std / sqrt(N), ddof=1) over runs of every scalar metric (nerblackbox's
    compute_mean_and_dmean)."""
    flat = [{"epochs": r["epochs"], "best_val_loss": r["best_val_loss"]}
            | {f"{s}.{k}": v for s in ("val", "test") for k, v in r.get(s, {}).items() if isinstance(v, (int, float))}
            for r in runs]
    out = {}
    for key in [k for k in flat[0] if all(k in f for f in flat)]:  # a metric undefined (None) in a run is left out
        xs = [float(f[key]) for f in flat]
        mean = sum(xs) / len(xs)
        var = sum((x - mean) ** 2 for x in xs) / (len(xs) - 1) if len(xs) > 1 else 0.0
        out[key] = {"mean": mean, "stderr": math.sqrt(var / len(xs))}
    return out


def _summary_text(summary: dict) -> str:
    keys = ("epochs", "val.entity.strict.micro.f1", "test.entity.strict.micro.f1", "test.entity.lenient.micro.f1",
            "test.token.fil.micro.f1")
    return "\n".join(f"{k}: {summary[k]['mean']:.4f} +- {summary[k]['stderr']:.4f} (mean +- standard error)"
                     for k in keys if k in summary)


def _backbone_kind(cfg: dict) -> str:
    return "gpt" if cfg["backbone"].startswith("gpt:") else "bert"


def _git() -> str | None:
    head = Path(__file__).resolve().parent / ".git" / "HEAD"
    try:
        ref = head.read_text().strip()
        return (head.parent / ref[5:]).read_text().strip() if ref.startswith("ref: ") else ref
    except OSError:
        return None


# -----------------------------------------------------------------------------
# CLI

def evaluate(cfg: dict) -> dict:
    """Evaluate a model folder on a data file: out/metrics.json, out/predictions.tsv, printed table. The file's
    layout is detected and checked as in train, and printed with its warnings before the model runs."""
    tagger = Tagger.load(cfg["model"], cfg["device"], cfg["batch_size"])
    issues = Issues()
    if not cfg["data"]:
        raise ValueError("give --data=FILE (the file to evaluate on)")
    examples, layout = _read(cfg["data"], cfg, issues)
    types = sorted({nertags.split_tag(t)[1] for t in tagger.labels} - {None})
    _check_shared_labels("data", layout, types)
    gold = _map_tags(examples, tagger.scheme, tagger.labels, issues, "data")
    _count_wordless({"data": examples}, {"data": gold}, tagger.tokenizer, issues)
    print(nerdata.layout_text("data", layout))
    if issues.counts:
        print(issues)
    pred, _ = tagger.tag([ex.words for ex in examples])
    metrics = nertags.evaluate_tags(gold, pred, tagger.scheme, tagger.labels) | {"issues": issues.summary(),
                                                                                 "layout": layout}
    out = Path(cfg["out"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    with open(out / "predictions.tsv", "w", encoding="utf-8") as f:
        for ex, g, p in zip(examples, gold, pred):
            f.write("".join(f"{w}\t{a}\t{b}\n" for w, a, b in zip(ex.words, g, p)) + "\n")
    print(nertags.metrics_table(metrics))
    return metrics


def main(argv: list[str] | None = None) -> None:
    """`python ner.py train|evaluate|predict [config.py ...] [--key=value ...]`."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("agreement", "merge", "resolve", "convert"):
        where = "annotate.py" if argv[0] == "convert" else "agreement.py"
        raise ValueError(f"the annotation commands are in annotate.py (convert) and agreement.py (agreement, merge, "
                         f"resolve): python {where} {argv[0]} -h lists its keys")
    command, cfg = configure_command({"train": TRAIN_DEFAULTS, "evaluate": EVALUATE_DEFAULTS,
                                      "predict": PREDICT_DEFAULTS}, argv, __file__)
    {"train": train, "evaluate": evaluate, "predict": _predict_cli}[command](cfg)


def _predict_cli(cfg: dict) -> None:
    if not cfg["input"] or not cfg["output"]:
        raise ValueError("give --input=in.jsonl|in.txt and --output=out.jsonl")
    if cfg["format"] not in ("jsonl", "labelstudio", "doccano"):
        raise ValueError(f"--format={cfg['format']!r}: choose jsonl, labelstudio or doccano")
    check_output_path("output", cfg["output"], [cfg["input"]])
    inputs = read_texts(cfg["input"])  # a missing file or one of another kind (CoNLL) stops before the model loads
    tagger = Tagger.load(cfg["model"], cfg["device"], cfg["batch_size"])
    if cfg["format"] == "jsonl":
        docs = predict_on_file(tagger, cfg["input"], cfg["output"])
        n = sum(len(d["tags"]) for d in docs)
    else:
        texts = [d["text"] for d in inputs]
        preds = predict(tagger, texts)
        write = annotate.write_labelstudio_predictions if cfg["format"] == "labelstudio" else annotate.write_doccano
        write(texts, preds, cfg["output"])
        docs, n = texts, sum(len(p) for p in preds)
    print(f"wrote {len(docs)} documents, {n} entities to {cfg['output']} ({cfg['format']})")


if __name__ == "__main__":
    from configurator import run_cli  # bad input: one line `ner.py: problem: fix`, exit 1
    run_cli("ner.py", main)
