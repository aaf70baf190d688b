"""documents.py: every format yields the same documents; bad records are reported with FILE:LINE under each
format and policy. Fixtures (.jsonl.gz, .jsonl.zst, .parquet) are written here from corpora/text."""
import gzip
import json
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from documents import expand, read_documents

N_DOCS = 400
BAD_LINE = 137  # 1-based line / row of the malformed record


@pytest.fixture(scope="module")
def texts(corpora) -> list[str]:
    """Real Swedish and Danish paragraphs, with non-ASCII text and an astral-plane emoji."""
    lines = []
    for lang in ("sv", "da"):
        src = (corpora / "text" / f"{lang}.txt").read_text(encoding="utf-8").splitlines()
        lines += [s for s in src if s.strip()][:N_DOCS // 2]
    lines[5] += " 🤖"
    return lines


def write_jsonl(path, records: list[bytes]):
    """records: one encoded JSON line each (may be malformed on purpose)."""
    body = b"".join(r + b"\n" for r in records)
    if path.name.endswith(".gz"):
        body = gzip.compress(body)
    elif path.name.endswith(".zst"):
        body = zstandard.ZstdCompressor().compress(body)
    path.write_bytes(body)
    return path


def write_corpus(folder, fmt: str, texts: list[str], bad: bytes | None = None, shards: int = 1):
    """texts in `shards` files of format fmt; `bad` replaces the raw record at BAD_LINE (txt/jsonl*: the line,
    parquet: the value of row BAD_LINE of a binary column; None bytes = a null value)."""
    folder.mkdir(parents=True, exist_ok=True)
    per = -(-len(texts) // shards)
    paths = []
    for s in range(shards):
        part = texts[s * per:(s + 1) * per]
        path = folder / f"shard_{s:05d}.{fmt}"
        raw = [t.encode() for t in part] if fmt == "txt" else \
            [json.dumps({"id": f"x{i}", "text": t}).encode() for i, t in enumerate(part)] if fmt != "parquet" \
            else [t.encode() for t in part]
        if bad is not None and s == 0:
            raw[BAD_LINE - 1] = bad
        if fmt == "txt":
            path.write_bytes(b"".join(r + b"\n" for r in raw))
        elif fmt == "parquet":
            values = [None if r == b"None" else r for r in raw]
            table = pa.table({"id": [f"x{i}" for i in range(len(part))],
                              "text": pa.array(values, pa.binary() if bad else pa.string())})
            pq.write_table(table, path, row_group_size=64)  # several row groups and batches
        else:
            write_jsonl(path, raw)
        paths.append(path)
    return paths


FORMATS = ("txt", "jsonl", "jsonl.gz", "jsonl.zst", "parquet")


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_yields_the_same_documents(texts, tmp_path, fmt):
    (path,) = write_corpus(tmp_path / "one", fmt, texts)
    report = {}
    docs = list(read_documents(path, report=report, fields=True))
    assert [d.text for d in docs] == texts
    assert [d.line for d in docs] == list(range(1, len(texts) + 1))
    assert report == {str(path): dict(documents=len(texts), skipped=0, repaired=0)}
    if fmt != "txt":
        assert docs[3].fields == {"id": "x3"}  # the other fields come along
    shards = write_corpus(tmp_path / "many", fmt, texts, shards=7)
    assert [d.text for d in read_documents(tmp_path / "many")] == texts  # a folder, in shard order
    assert [d.text for d in read_documents(str(tmp_path / "many" / f"shard_*.{fmt}"))] == texts  # a glob
    assert expand([tmp_path / "many"]) == shards


# the malformed record per format: what it holds, and the words of the error
MALFORMED = [
    ("txt", b"gr\xe5 (latin-1)", "not UTF-8"),
    ("txt", b"binary \x00\x01 data", "NUL byte"),
    ("jsonl", b'{"text": "cut emoji \\ud83e here"}', "unpaired UTF-16 surrogate"),
    ("jsonl", b'{"text": "gr\xe5"}', "not UTF-8"),
    ("jsonl", b'{"text": "nul \\u0000 inside"}', "NUL character"),
    ("jsonl", b'{"text": "unclosed', "invalid JSON"),
    ("jsonl", b'{"txt": "wrong field"}', "no string field 'text'"),
    ("jsonl.gz", b'{"text": "cut emoji \\udc16 here"}', "unpaired UTF-16 surrogate"),
    ("jsonl.zst", b'{"text": "cut emoji \\ud83e here"}', "unpaired UTF-16 surrogate"),
    ("jsonl.zst", b'{"text": "gr\xe5"}', "not UTF-8"),
    ("parquet", b"gr\xe5 (latin-1)", "not UTF-8"),
    ("parquet", b"None", "null 'text'"),
]


@pytest.mark.parametrize("fmt,bad,words", MALFORMED)
def test_malformed_record_is_reported_with_file_and_line(texts, tmp_path, fmt, bad, words):
    (path,) = write_corpus(tmp_path, fmt, texts, bad=bad)
    with pytest.raises(ValueError, match=rf"{path.name}:{BAD_LINE}\b.*{words}.*on_bad_input='skip'"):
        list(read_documents(path))
    report = {}
    others = texts[:BAD_LINE - 1] + texts[BAD_LINE:]
    assert [d.text for d in read_documents(path, on_bad_input="skip", report=report)] == others
    assert report[str(path)] == dict(documents=len(others), skipped=1, repaired=0)
    bad_docs = [d for d in read_documents(path, on_bad_input="skip", yield_bad=True) if d.error]
    assert [(d.key, words in d.error) for d in bad_docs] == [(f"{path}:{BAD_LINE}", True)]
    report = {}
    docs = list(read_documents(path, on_bad_input="replace", report=report))
    repairable = words not in ("invalid JSON", "no string field 'text'", "null 'text'")
    assert report[str(path)] == dict(documents=len(texts) - (not repairable), skipped=int(not repairable),
                                     repaired=int(repairable))
    if repairable:
        fixed = docs[BAD_LINE - 1].text
        assert "\ufffd" in fixed and fixed.encode("utf-8")  # valid UTF-8 now: every writer accepts it
        assert [d.text for d in docs[:BAD_LINE - 1] + docs[BAD_LINE:]] == others


def test_paired_surrogate_escapes_are_fine(tmp_path):
    path = write_jsonl(tmp_path / "ok.jsonl", [b'{"text": "robot \\ud83e\\udd16"}'])
    assert [d.text for d in read_documents(path)] == ["robot 🤖"]


def test_whole_file_txt_and_trailing_lines(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"one\r\ntwo\n\nfour")  # CRLF, a blank line, no final newline
    assert [(d.text, d.line) for d in read_documents(tmp_path / "a.txt")] == \
        [("one", 1), ("two", 2), ("", 3), ("four", 4)]
    (tmp_path / "b.txt").write_bytes(b"ok\nline \xff two\n")
    with pytest.raises(ValueError, match=r"b.txt:2, byte offset 8: not UTF-8"):
        list(read_documents(tmp_path / "b.txt", txt_unit="file"))
    assert [d.text for d in read_documents(tmp_path / "a.txt", txt_unit="file")] == ["one\r\ntwo\n\nfour"]


def test_bad_paths_and_options(tmp_path):
    (tmp_path / "notes.md").write_text("# notes\n")
    with pytest.raises(ValueError, match="notes.md: unsupported file type"):
        expand(tmp_path / "notes.md")
    with pytest.raises(FileNotFoundError, match="has no .txt/.jsonl"):
        expand(tmp_path)
    with pytest.raises(FileNotFoundError, match="pattern .*matches no"):
        expand(str(tmp_path / "*.parquet"))
    with pytest.raises(FileNotFoundError, match="nowhere.txt not found"):
        expand("nowhere.txt")
    with pytest.raises(ValueError, match="on_bad_input must be one of"):
        list(read_documents(tmp_path, on_bad_input="report"))
    pq.write_table(pa.table({"content": ["a", "b"]}), tmp_path / "t.parquet")
    with pytest.raises(ValueError, match=r"t.parquet: no column 'text' \(columns: content\).*--text_field"):
        list(read_documents(tmp_path / "t.parquet"))
    assert [d.text for d in read_documents(tmp_path / "t.parquet", text_field="content")] == ["a", "b"]
    body = b"".join(b"{\"text\": \"line %d\"}\n" % i for i in range(1000))
    (tmp_path / "cut.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(body)[:-100])
    with pytest.raises(ValueError, match="cut.jsonl.zst:.*truncated"):
        list(read_documents(tmp_path / "cut.jsonl.zst"))
    (tmp_path / "cut.jsonl.gz").write_bytes(gzip.compress(body)[:-100])
    with pytest.raises(ValueError, match="cut.jsonl.gz:.*truncated"):
        list(read_documents(tmp_path / "cut.jsonl.gz"))
    frames = b"".join(zstandard.ZstdCompressor().compress(body[i:i + 5000]) for i in range(0, len(body), 5000))
    (tmp_path / "frames.jsonl.zst").write_bytes(frames)  # several frames, cut mid-line: one stream
    assert [d.text for d in read_documents(tmp_path / "frames.jsonl.zst")] == [f"line {i}" for i in range(1000)]


def _one_line_corpus(path, line_bytes: int) -> list[str]:
    """A .txt file: a short line, one line of line_bytes bytes, a short line."""
    letters = bytes(b"abcdefghijklmnopqrstuvwxyz "[b % 27] for b in range(256))
    long = random.Random(0).randbytes(line_bytes).translate(letters).decode()  # random text: zstd cannot squeeze it
    lines = ["a först short document", long, "a last short document"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return lines


@pytest.mark.parametrize("suffix", [".txt", ".jsonl", ".jsonl.zst"])
def test_a_document_over_the_size_limit_is_never_held_whole(tmp_path, suffix):
    """A 20 MB line with a 1 MB limit: refused under 'stop' naming FILE:LINE, skipped and counted under
    'skip', with the documents around it intact; the reader's peak memory stays near its 64 KiB read pieces."""
    import tracemalloc
    path = tmp_path / f"big{suffix}"
    lines = _one_line_corpus(tmp_path / "big.txt", 20_000_000)
    if suffix != ".txt":
        body = b"".join(json.dumps({"text": t}, ensure_ascii=False).encode() + b"\n" for t in lines)
        path.write_bytes(zstandard.ZstdCompressor().compress(body) if suffix.endswith("zst") else body)
    with pytest.raises(ValueError, match=rf"{path}:2: document of [\d,]{{10}} bytes, over the limit of 1,000,000"):
        list(read_documents(path, max_document_bytes=1_000_000))
    report = {}
    tracemalloc.start()
    docs = list(read_documents(path, on_bad_input="skip", report=report, max_document_bytes=1_000_000,
                               yield_bad=True))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert [d.text for d in docs] == [lines[0], "", lines[2]] and [d.line for d in docs] == [1, 2, 3]
    assert "over the limit" in docs[1].error and report[str(path)] == dict(documents=2, skipped=1, repaired=0)
    assert peak < 4_000_000, peak  # the 20 MB line was never in memory (zstd: its compressed frame is small)
    assert [d.text for d in read_documents(path, max_document_bytes=30_000_000)] == lines  # under the limit


def test_lines_are_the_same_read_in_pieces(tmp_path, monkeypatch):
    """The piecewise reader splits lines exactly as Python's file iteration, whatever the piece size."""
    import documents
    text = "".join(random_line + "\n" * (i % 3 == 0) + "\r\n" * (i % 5 == 0) + "\n"
                   for i, random_line in enumerate(["x" * (i * 7 % 23) + "å" * (i % 4) for i in range(200)]))
    path = tmp_path / "lines.txt"
    path.write_bytes(text.encode() + b"no newline at the end")
    expected = [d.text for d in read_documents(path)]
    assert expected == [line.rstrip(b"\n").rstrip(b"\r").decode() for line in open(path, "rb")]
    for size in (1, 2, 3, 7, 64):
        monkeypatch.setattr(documents, "_READ_BYTES", size)
        assert [d.text for d in read_documents(path)] == expected
    with pytest.raises(ValueError, match=f"{path}:0: document of"):  # a whole-file document too
        list(read_documents(path, txt_unit="file", max_document_bytes=10))


def test_whole_file_document_and_where_its_bad_byte_is(tmp_path):
    """txt_unit='file': one document at line 0 of its file; a NUL or bad byte is reported at the line of the
    first one (a leading newline counts), skipped (counted) under 'skip' and repaired under 'replace'."""
    (tmp_path / "a.txt").write_bytes(b"one\ntwo")
    (doc,) = read_documents(tmp_path / "a.txt", txt_unit="file")
    assert (doc.text, doc.source, doc.line, doc.key, doc.error) == ("one\ntwo", str(tmp_path / "a.txt"), 0,
                                                                    f"{tmp_path / 'a.txt'}:0", None)
    for name, raw, where in (("n0.txt", b"\x00abc\nx\n", "n0.txt:1, byte offset 0: NUL byte"),
                             ("n2.txt", b"ok\nx\x00\ny\x00\n", "n2.txt:2, byte offset 4: NUL byte"),
                             ("lead.txt", b"\n\x00\n", "lead.txt:2, byte offset 1: NUL byte")):
        (tmp_path / name).write_bytes(raw)
        with pytest.raises(ValueError, match=where):
            list(read_documents(tmp_path / name, txt_unit="file"))
    report = {}
    assert list(read_documents(tmp_path / "n2.txt", txt_unit="file", on_bad_input="skip", report=report)) == []
    assert report[str(tmp_path / "n2.txt")] == dict(documents=0, skipped=1, repaired=0)
    report = {}
    (doc,) = read_documents(tmp_path / "n2.txt", txt_unit="file", on_bad_input="replace", report=report)
    assert doc.text == "ok\nx\ufffd\ny\ufffd\n" and doc.error is None
    assert report[str(tmp_path / "n2.txt")] == dict(documents=1, skipped=0, repaired=1)


def test_line_text_offsets_and_stream_errors(tmp_path):
    """A .txt line keeps its trailing spaces and letters (only its newline goes); byte offsets count from the
    start of the file on every line; a bad JSONL line yielded with yield_bad keeps its raw text (no newline);
    a blank JSONL line is an empty document at its line; a file that is not gzip / zstd at all is one
    ValueError naming line 1 and byte 0."""
    (tmp_path / "t.txt").write_bytes(b"TAX\nend  \t\r\n")
    assert [d.text for d in read_documents(tmp_path / "t.txt")] == ["TAX", "end  \t"]
    for raw, where in ((b"\xff\n", "o1.txt:1, byte offset 0"), (b"a\nbb\nc\xff\n", "o1.txt:3, byte offset 6")):
        (tmp_path / "o1.txt").write_bytes(raw)
        with pytest.raises(ValueError, match=where):
            list(read_documents(tmp_path / "o1.txt"))
    path = tmp_path / "b.jsonl"
    path.write_bytes(b'{"text": "a"}\n\nno json X\nno json \nbad \xff byte\n')
    docs = list(read_documents(path, on_bad_input="skip", yield_bad=True))
    assert [(d.text, d.source, d.line, d.fields, d.error is None) for d in docs] == [
        ("a", str(path), 1, {}, True), ("", str(path), 2, {}, True), ("no json X", str(path), 3, {}, False),
        ("no json ", str(path), 4, {}, False), ("bad \ufffd byte", str(path), 5, {}, False)]
    (tmp_path / "f.jsonl").write_bytes(b'{"id": "x1", "text": "a"}\n')
    assert [d.fields for d in read_documents(tmp_path / "f.jsonl")] == [{}]  # the other fields only when asked
    assert [d.fields for d in read_documents(tmp_path / "f.jsonl", fields=True)] == [{"id": "x1"}]
    with pytest.raises(ValueError, match=r"^txt_unit must be 'line' or 'file', got 'para'$"):
        list(read_documents(tmp_path / "t.txt", txt_unit="para"))
    (tmp_path / "g.jsonl.gz").write_bytes(b"not gzip")
    with pytest.raises(ValueError, match=r"g.jsonl.gz:1: cannot read the jsonl.gz stream after byte 0 \("):
        list(read_documents(tmp_path / "g.jsonl.gz"))
    (tmp_path / "z.jsonl.zst").write_bytes(b"not zstd at all")
    with pytest.raises(ValueError, match=r"^.*z.jsonl.zst:1: corrupt zstd stream after byte 0 \(.*\): the file is "
                                         r"truncated or not zstd; re-download or re-compress it$"):
        list(read_documents(tmp_path / "z.jsonl.zst"))


def test_the_files_are_closed_after_reading(tmp_path):
    import gc
    import warnings
    (tmp_path / "a.txt").write_bytes(b"one\ntwo\n")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert len(list(read_documents(tmp_path / "a.txt"))) == 2
        gc.collect()
    assert not [w for w in seen if issubclass(w.category, ResourceWarning)]


def test_bad_records_are_counted_and_summed_up_on_stderr(tmp_path, capsys):
    """Every skipped record counts; one stderr line per file with skipped or repaired records (none for a clean
    file); the message of a bad byte says how to fix the file."""
    path = tmp_path / "two.txt"
    path.write_bytes(b"ok\nbad \xff\nworse \xfe\n")
    report = {}
    assert [d.text for d in read_documents(path, on_bad_input="skip", report=report)] == ["ok"]
    assert report[str(path)] == dict(documents=1, skipped=2, repaired=0)
    assert capsys.readouterr().err == (f"warning: {path}: 2 bad record(s) skipped, 0 repaired "
                                       f"(on_bad_input='skip'), 1 read\n")
    assert len(list(read_documents(path, on_bad_input="replace"))) == 3
    assert capsys.readouterr().err == (f"warning: {path}: 0 bad record(s) skipped, 2 repaired "
                                       f"(on_bad_input='replace'), 3 read\n")
    (tmp_path / "clean.txt").write_bytes(b"ok\n")
    assert len(list(read_documents(tmp_path / "clean.txt"))) == 1 and capsys.readouterr().err == ""
    with pytest.raises(ValueError, match=r"^.*two.txt:2, byte offset 7: not UTF-8 \(invalid start byte\); re-encode "
                                         r"the file as UTF-8 \(e.g. iconv -f latin1 -t utf-8\), or pass"):
        list(read_documents(path))
