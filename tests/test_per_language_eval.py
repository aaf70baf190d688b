"""Per-language evaluation on the producers' output: data.py prepares a two-language dataset from the shared
text (val_sv.bin, val_da.bin and meta.json's token and byte counts, not a hand-written meta.json), train.py
trains 2 steps on it, and every logged val_loss/<lang> and val_bpb/<lang> is recomputed independently from the
checkpoint: the mean cross-entropy (torch.nn.functional) over the same fixed validation windows, and bits per
byte = nats per token / ln 2 x tokens per UTF-8 byte of that language's validation text."""
import json
import math

import pytest
import torch
from conftest import TINY_TRAIN, read_jsonl, train_py
from torch.nn import functional as F

import data
from loader import get_batch
from model import GPT, GPTConfig


@pytest.mark.slow
def test_val_loss_and_bits_per_byte_per_language(tmp_path, corpora):
    src = {}
    for lang in ('sv', 'da'):
        lines = (corpora / 'text' / f'{lang}.txt').read_text(encoding='utf-8').splitlines()[:1500]
        src[lang] = tmp_path / 'in' / lang / 'text.txt'
        src[lang].parent.mkdir(parents=True)
        src[lang].write_text('\n'.join(lines) + '\n', encoding='utf-8')
    folder = data.prepare_dataset('svda', data_root=tmp_path / 'data', vocab_size=400, num_proc=1,
                                  sources={lang: str(p) for lang, p in src.items()})
    meta = data.load_meta(folder)
    assert sorted(meta['val_splits']) == ['val_da', 'val_sv']
    r = train_py(tmp_path / 'run', folder.parent, folder.name)
    assert r.returncode == 0, r.stderr[-3000:]
    ev = [x for x in read_jsonl(tmp_path / 'run' / 'metrics.jsonl') if 'val_loss' in x][-1]

    ckpt = torch.load(tmp_path / 'run' / 'ckpt.pt', weights_only=True)
    model = GPT(GPTConfig(**ckpt['model_args']))
    model.load_state_dict(ckpt['model'])
    model.eval()
    B, T, n = TINY_TRAIN['batch_size'], TINY_TRAIN['block_size'], TINY_TRAIN['eval_iters']
    for lang in ('sv', 'da'):
        val = data.load_tokens(folder, f'val_{lang}')
        gen = torch.Generator().manual_seed(ckpt['config']['seed'] + 7)  # train.py's fixed eval windows
        with torch.no_grad():
            ce = sum(F.cross_entropy(model(x).flatten(0, 1), y.flatten()).item()
                     for x, y in (get_batch(val, B, T, gen) for _ in range(n))) / n
        assert ev[f'val_loss/{lang}'] == pytest.approx(ce, rel=1e-5), lang
        lm = meta['languages'][lang]
        assert lm['val_tokens'] == len(val)
        text = data.dataset_tokenizer(folder).decode([t for t in val.tolist() if t != meta['eot']])
        # the validation text's UTF-8 bytes (documents joined: the EOT separators are no text)
        assert abs(lm['val_bytes'] - len(text.encode('utf-8'))) <= lm['val_docs']
        assert ev[f'val_bpb/{lang}'] == pytest.approx(ce / math.log(2) * len(val) / lm['val_bytes'], rel=1e-5)
    assert ev['val_loss/sv'] != ev['val_loss/da']
    cfg = json.loads((tmp_path / 'run' / 'config.json').read_text())
    assert cfg['dataset'] == 'svda'
