"""
Documents: the one streaming reader of corpus files, used by data.py prepare, clean.py and tokenizer.py.

    for doc in read_documents(["corpus/", "extra/*.jsonl.zst"], text_field="text", on_bad_input="stop"):
        doc.text, doc.source, doc.line, doc.fields

Formats, told apart by the file name:
    .txt                     one document per line ('line', the default) or per file (txt_unit='file')
    .jsonl .jsonl.gz .jsonl.zst   one JSON object per line; the document is the string field `text_field`
    .parquet                 one document per row of the string column `text_field` (FineWeb's layout)
Paths may be files, folders (searched recursively for those suffixes, sorted) or glob patterns. Files are
read one line or one Parquet batch at a time, so memory does not grow with the corpus; and one document
(a line, a whole-file .txt document, a Parquet row) may hold at most MAX_DOCUMENT_BYTES (8 MB; argument
max_document_bytes): a longer one is never held in memory whole (a line is read past in 64 KiB pieces) and is a
bad record, "FILE:LINE: document of N bytes, over the limit", so that no step after the reader (metrics,
normalisation, SentencePiece) meets a text that is a whole corpus on one line.

Bad input, one policy under one name everywhere (`on_bad_input`):
    'stop'     stop at the first bad record with ValueError "FILE:LINE: what is wrong; how to fix it"
    'skip'     leave the record out; it is counted per file in `report` (and yielded with `.error` set
               when the caller asks for bad records, as clean.py does for its removed.jsonl)
    'replace'  repair the text (each bad byte, NUL or unpaired surrogate -> U+FFFD) and count it per file;
               records that cannot be repaired (invalid JSON, no text field) are skipped and counted
Bad records are: bytes that are not UTF-8, NUL characters (binary data), JSON strings holding an unpaired
UTF-16 surrogate (e.g. an escaped half of an emoji, which no UTF-8 writer can encode), invalid JSON, a
record whose `text_field` is missing or not a string, and a document over max_document_bytes (never
repaired). LINE is the 1-based line of a text file, also of a compressed one (its byte offset counts in the
decompressed stream), or the 1-based row of a Parquet file.

What is built from documents (a dataset folder, a cleaning output) is built in a temporary folder beside
its destination and renamed into place when complete (`building`, `replace_folder` at the end of this file),
so a killed run never leaves a half-written or mixed output.
"""
import glob
import gzip
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

try:
    import fcntl  # POSIX: a build folder is locked by its running build
except ImportError:  # pragma: no cover - elsewhere stale folders are only removed by age
    fcntl = None

ON_BAD_INPUT = ("stop", "skip", "replace")
SUFFIXES = (".txt", ".jsonl", ".jsonl.gz", ".jsonl.zst", ".parquet")
PARQUET_BATCH_ROWS = 1024  # rows decoded at a time: bounds memory on shards of any size
MAX_DOCUMENT_BYTES = 8_000_000  # the largest document read (UTF-8 bytes): clean.py's metrics take ~70x a
# document's size in memory; a book is ~1-5 MB, and SentencePiece drops "sentences" over 2 MB (GPT-SW3's setting)
_READ_BYTES = 1 << 16  # a text file is read in pieces of this size, so an over-long line is never held whole
_SURROGATE = re.compile("[\ud800-\udfff]")
_ESCAPED_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]")  # a JSON escape of either half of a UTF-16 pair
_FIX = {
    "utf8": "re-encode the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)",
    "nul": "it looks like binary data: remove it from the input",
    "surrogate": "the writer cut a UTF-16 pair (e.g. an emoji) in half: fix the record",
    "json": "write one JSON object per line",
    "size": "split it into smaller documents (e.g. one paragraph per line)",
}


@dataclass
class Document:
    text: str
    source: str  # the file it came from, as given (folders expanded)
    line: int  # 1-based line (.txt/.jsonl*) or row (.parquet); 0 for a whole-file .txt document
    fields: dict = field(default_factory=dict)  # the record's other fields (JSONL / Parquet), when asked for
    error: str | None = None  # why the record is bad (only on records yielded with yield_bad=True)

    @property
    def key(self) -> str:
        """FILE:LINE, unique within one run over a list of files (unlike a record's own `id`)."""
        return f"{self.source}:{self.line}"


def format_of(path: Path) -> str | None:
    """'txt' | 'jsonl' | 'jsonl.gz' | 'jsonl.zst' | 'parquet' from the file name, None if unsupported."""
    name = path.name.lower()
    return next((s[1:] for s in sorted(SUFFIXES, key=len, reverse=True) if name.endswith(s)), None)


def expand(paths: str | Path | list) -> list[Path]:
    """Files, folders (recursive) and glob patterns -> the list of corpus files, each folder's and pattern's
    matches sorted (shard_00000.parquet, shard_00001.parquet, ... stay in order).
    Raises FileNotFoundError for a path or pattern that names nothing readable, ValueError for a named file
    of an unsupported type."""
    out = []
    for p in [paths] if isinstance(paths, (str, Path)) else paths:
        p = Path(p)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and format_of(f))
            if not found:
                raise FileNotFoundError(f"folder {p} has no {'/'.join(SUFFIXES)} files: point the input at "
                                        f"corpus files")
            out += found
        elif p.is_file():
            if format_of(p) is None:
                raise ValueError(f"input {p}: unsupported file type; use one of {', '.join(SUFFIXES)}")
            out.append(p)
        elif glob.has_magic(str(p)):
            found = sorted(Path(f) for f in glob.glob(str(p), recursive=True) if format_of(Path(f)))
            if not found:
                raise FileNotFoundError(f"pattern {p} matches no {'/'.join(SUFFIXES)} file")
            out += found
        else:
            raise FileNotFoundError(f"input {p} not found: give existing files, folders or glob patterns")
    return out


def read_documents(paths: str | Path | list, text_field: str = "text", txt_unit: str = "line",
                   on_bad_input: str = "stop", report: dict | None = None, fields: bool = False,
                   yield_bad: bool = False, max_document_bytes: int | None = None) -> Iterator[Document]:
    """Stream the documents of `paths` (see the module docstring) in file order, then line order.
    Every record is yielded, also empty ones (callers decide what an empty document means); a trailing
    newline does not make an extra record. report (optional, filled as the files are read):
    {file: {"documents", "skipped", "repaired"}}. fields=True also returns the other fields of each
    JSONL/Parquet record; yield_bad=True also yields skipped records (text = the raw line, repaired; empty for
    a document over max_document_bytes, None = MAX_DOCUMENT_BYTES).
    Raises ValueError (FILE:LINE and the fix) for bad input under 'stop' and for unreadable files."""
    if on_bad_input not in ON_BAD_INPUT:
        raise ValueError(f"on_bad_input must be one of {ON_BAD_INPUT}, got {on_bad_input!r}")
    if txt_unit not in ("line", "file"):
        raise ValueError(f"txt_unit must be 'line' or 'file', got {txt_unit!r}")
    report = {} if report is None else report
    limit = MAX_DOCUMENT_BYTES if max_document_bytes is None else max_document_bytes
    for path in expand(paths):
        counts = report.setdefault(str(path), dict(documents=0, skipped=0, repaired=0))
        fmt = format_of(path)
        if fmt == "parquet":
            records = _parquet_records(path, text_field, on_bad_input, fields, limit)
        elif fmt == "txt" and txt_unit == "file":
            records = _whole_file(path, on_bad_input, limit)
        else:
            records = _line_records(path, fmt, text_field, on_bad_input, fields, limit)
        for doc, problem in records:
            if doc.error is not None:
                counts["skipped"] += 1
                if not yield_bad:
                    continue
            else:
                counts["documents"] += 1
                counts["repaired"] += problem is not None
            yield doc
        if counts["skipped"] or counts["repaired"]:
            print(f"warning: {path}: {counts['skipped']} bad record(s) skipped, {counts['repaired']} repaired "
                  f"(on_bad_input={on_bad_input!r}), {counts['documents']} read", file=sys.stderr)


# ----------------------------------------------------------------------------------------------------
# one record: decode, check, repair


def _too_long(where: str, size: int, limit: int, on_bad_input: str) -> str:
    """The error of a document over the size limit (raised under 'stop'; never repaired)."""
    return _bad(where, f"document of {size:,} bytes, over the limit of {limit:,} bytes per document",
                _FIX["size"] + " or raise max_document_bytes", on_bad_input)


def _bad(where: str, problem: str, fix: str, on_bad_input: str) -> str:
    """The error of a bad record; raises it under 'stop'."""
    msg = f"{where}: {problem}; {fix}, or pass on_bad_input='skip' (leave it out) or 'replace' (repair it)"
    if on_bad_input == "stop":
        raise ValueError(msg)
    return msg


def _decode(raw: bytes, where: str, offset: int, on_bad_input: str) -> tuple[str, str | None, bool]:
    """UTF-8 bytes -> (text, error message or None, repaired). NUL counts as bad."""
    try:
        text = raw.decode("utf-8")
        bad_at, reason, fix = (raw.index(b"\x00"), "NUL byte", _FIX["nul"]) if b"\x00" in raw else (None,) * 3
    except UnicodeDecodeError as e:
        text, bad_at, reason, fix = None, e.start, f"not UTF-8 ({e.reason})", _FIX["utf8"]
    if bad_at is None:
        return text, None, False
    msg = _bad(f"{where}, byte offset {offset + bad_at}", reason, fix, on_bad_input)
    text = raw.decode("utf-8", "replace").replace("\x00", "\ufffd")
    return text, msg, on_bad_input == "replace"


def _json_record(line: str, raw: bytes, where: str, text_field: str, on_bad_input: str):
    """-> (record dict or None, error or None, repaired)."""
    try:
        rec = json.loads(line)
    except json.JSONDecodeError as e:
        return None, _bad(where, f"invalid JSON ({e.msg}, column {e.colno})", _FIX["json"], on_bad_input), False
    if not isinstance(rec, dict) or not isinstance(rec.get(text_field), str):
        got = type(rec.get(text_field)).__name__ if isinstance(rec, dict) and text_field in rec else "none"
        fix = f'each line must look like {{"{text_field}": "..."}}; choose the field with --text_field'
        return None, _bad(where, f"no string field {text_field!r} (got {got})", fix, on_bad_input), False
    msg = None
    if _ESCAPED_SURROGATE.search(raw) and has_surrogate(rec):
        msg = _bad(where, "unpaired UTF-16 surrogate in a JSON string", _FIX["surrogate"], on_bad_input)
        rec = _replace_surrogates(rec)
    if "\x00" in rec[text_field]:
        msg = msg or _bad(where, "NUL character in the text", _FIX["nul"], on_bad_input)
        rec[text_field] = rec[text_field].replace("\x00", "\ufffd")
    return rec, msg, msg is not None and on_bad_input == "replace"


def has_surrogate(obj) -> bool:
    """Whether a string, or any key or value inside a JSON-decoded object, holds an unpaired surrogate."""
    if isinstance(obj, str):
        return _SURROGATE.search(obj) is not None
    if isinstance(obj, dict):
        return any(map(has_surrogate, obj.keys())) or any(map(has_surrogate, obj.values()))
    if isinstance(obj, list):
        return any(map(has_surrogate, obj))
    return False


def _replace_surrogates(obj):
    if isinstance(obj, str):
        return _SURROGATE.sub("\ufffd", obj)
    if isinstance(obj, dict):
        return {_replace_surrogates(k): _replace_surrogates(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_replace_surrogates(v) for v in obj]
    return obj


# ----------------------------------------------------------------------------------------------------
# the formats


def _zstd_chunks(path: Path):
    """The decompressed bytes of a .zst file, one frame at a time (the Pile's shards hold several frames).
    A stream that ends inside a frame raises EOFError: zstandard's stream_reader would end it silently."""
    import zstandard
    dobj = None
    with open(path, "rb") as f:
        while chunk := f.read(_READ_BYTES):  # text expands ~3-10x in decompression
            while chunk:
                dobj = dobj or zstandard.ZstdDecompressor().decompressobj()
                yield dobj.decompress(chunk)
                chunk = dobj.unused_data if dobj.eof else b""
                dobj = None if dobj.eof else dobj
    if dobj is not None:
        raise EOFError("compressed file ended before the end of a zstd frame")


def _file_chunks(path: Path, fmt: str):
    """The bytes of a file in pieces of about _READ_BYTES, decompressing .gz / .zst as a stream."""
    if fmt == "jsonl.zst":
        yield from _zstd_chunks(path)
        return
    with gzip.open(path, "rb") if fmt == "jsonl.gz" else open(path, "rb") as f:
        while chunk := f.read(_READ_BYTES):
            yield chunk


def _bounded_lines(chunks, limit: int):
    """The lines (each with its newline) of a stream of byte pieces; a line over `limit` bytes is never held
    whole: its length in bytes (an int) is yielded instead, once the stream has been read past it."""
    parts, held, skipped = [], 0, 0  # parts of the line so far (held bytes), or bytes of a line read past
    for chunk in chunks:
        pieces = chunk.split(b"\n")
        for i, piece in enumerate(pieces):
            if skipped or held + len(piece) > limit:
                skipped, parts, held = skipped + held + len(piece), [], 0
            else:
                parts.append(piece)
                held += len(piece)
            if i == len(pieces) - 1:
                break  # the line goes on in the next piece
            if skipped:
                yield skipped + 1
            else:
                yield b"".join(parts) + b"\n"
            parts, held, skipped = [], 0, 0
    if skipped:
        yield skipped
    elif held:
        yield b"".join(parts)


def _line_records(path: Path, fmt: str, text_field: str, on_bad_input: str, fields: bool, limit: int):
    """.txt (a document per line) and .jsonl[.gz|.zst]: (Document, error or None) per line."""
    offset, n = 0, 0
    lines = _bounded_lines(_file_chunks(path, fmt), limit + 1)  # a CR before the newline is not counted
    try:
        for n, raw in enumerate(lines, 1):
            if isinstance(raw, int):  # a line over the limit, already read past
                msg = _too_long(f"{path}:{n}", raw, limit, on_bad_input)
                yield Document("", str(path), n, error=msg), msg
                offset += raw
                continue
            yield _line_record(raw, path, fmt, n, offset, text_field, on_bad_input, fields)
            offset += len(raw)
    except (OSError, EOFError) as e:  # gzip.BadGzipFile is an OSError
        raise ValueError(f"{path}:{n + 1}: cannot read the {fmt} stream after byte {offset} ({e}): the file is "
                         f"truncated or not {fmt}; re-download or re-compress it") from None
    except Exception as e:
        if type(e).__name__ != "ZstdError":
            raise
        raise ValueError(f"{path}:{n + 1}: corrupt zstd stream after byte {offset} ({e}): the file is "
                         f"truncated or not zstd; re-download or re-compress it") from None
    finally:
        if hasattr(lines, "close"):
            lines.close()


def _line_record(raw: bytes, path: Path, fmt: str, n: int, offset: int, text_field: str, on_bad_input: str,
                 fields: bool) -> tuple[Document, str | None]:
    where = f"{path}:{n}"
    line, msg, fixed = _decode(raw.rstrip(b"\n").rstrip(b"\r") if fmt == "txt" else raw.rstrip(b"\n"),
                               where, offset, on_bad_input)
    if fmt == "txt":
        return Document(line, str(path), n, error=None if fixed else msg), msg
    if msg is not None and not fixed:
        return Document(line, str(path), n, error=msg), msg
    if not line.strip():
        return Document("", str(path), n), None  # a blank line in JSONL: an empty document
    rec, msg2, fixed2 = _json_record(line, raw, where, text_field, on_bad_input)
    if rec is None:
        return Document(line, str(path), n, error=msg2), msg2
    text = rec.pop(text_field)
    err = msg2 if msg2 is not None and not fixed2 else None
    return Document(text, str(path), n, rec if fields else {}, err), msg or msg2


def _whole_file(path: Path, on_bad_input: str, limit: int):
    """.txt with txt_unit='file': one document (line 0); a bad byte is reported with its line."""
    size = path.stat().st_size
    if size > limit:
        msg = _too_long(f"{path}:0", size, limit, on_bad_input)
        yield Document("", str(path), 0, error=msg), msg
        return
    raw = path.read_bytes()
    try:
        raw.decode("utf-8")
        bad = raw.index(b"\x00") if b"\x00" in raw else -1
    except UnicodeDecodeError as e:
        bad = e.start
    line = raw.count(b"\n", 0, bad) + 1 if bad >= 0 else 0
    text, msg, fixed = _decode(raw, f"{path}:{line}", 0, on_bad_input)
    yield Document(text, str(path), 0, error=None if fixed else msg), msg


def _parquet_records(path: Path, text_field: str, on_bad_input: str, fields: bool, limit: int):
    """.parquet: one document per row of the string column text_field, read PARQUET_BATCH_ROWS at a time."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    if pa.default_memory_pool().backend_name != "system":
        # Arrow's default allocator (mimalloc) keeps freed batches for reuse: reading 8x more shards measured
        # ~25 MB more peak memory with it, ~6 MB with the C allocator, which returns them
        pa.set_memory_pool(pa.system_memory_pool())
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        raise ValueError(f"{path}: not a readable Parquet file ({e}); re-download or re-write it") from None
    names = pf.schema_arrow.names
    if text_field not in names:
        raise ValueError(f"{path}: no column {text_field!r} (columns: {', '.join(names)}); choose the text "
                         f"column with --text_field")
    kind = pf.schema_arrow.field(text_field).type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_binary(kind)
            or pa.types.is_large_binary(kind)):
        raise ValueError(f"{path}: column {text_field!r} holds {kind}, not text; choose the text column with "
                         f"--text_field")
    raw_type = pa.large_binary() if pa.types.is_large_string(kind) or pa.types.is_large_binary(kind) \
        else pa.binary()
    row = 0
    for batch in pf.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=None if fields else [text_field]):
        # bytes, decoded here: Arrow does not check that a string column is UTF-8
        texts = batch.column(text_field).cast(raw_type).to_pylist()
        others = batch.drop_columns([text_field]).to_pylist() if fields else None
        for i, raw in enumerate(texts):
            row += 1
            where = f"{path}:{row}"
            if raw is None:
                msg = _bad(where, f"null {text_field!r} (row {row})", "fill or drop the row", on_bad_input)
                yield Document("", str(path), row, error=msg), msg
                continue
            if len(raw) > limit:
                msg = _too_long(where, len(raw), limit, on_bad_input)
                yield Document("", str(path), row, error=msg), msg
                continue
            text, msg, fixed = _decode(raw, where + f" (row {row})", 0, on_bad_input)
            yield Document(text, str(path), row, others[i] if fields else {}, None if fixed else msg), msg


# ----------------------------------------------------------------------------------------------------
# output folders: build in a temporary sibling, rename into place when complete

STALE_UNLOCKED_S = 24 * 3600  # a build folder without a lock file (none of ours) counts as stale after this


@contextmanager
def building(folder: str | Path) -> Iterator[Path]:
    """A fresh temporary folder beside `folder` (.NAME.building.XXXX), locked (flock on .lock) for as long as
    this build runs, and removed on exit unless the caller renamed it away with replace_folder. Build
    folders of earlier runs that were killed (their lock is free) are removed first."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_builds(folder)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.building.", dir=folder.parent))
    lock = open(tmp / ".lock", "w")
    try:
        if fcntl is not None:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)  # mkdtemp made it private; the result should not be
        yield tmp
    finally:
        lock.close()
        shutil.rmtree(tmp, ignore_errors=True)


def remove_stale_builds(folder: Path) -> list[Path]:
    """Remove the .NAME.building.* folders of killed runs (lock free, or no lock and older than a day)."""
    removed = []
    for tmp in folder.parent.glob(f".{glob.escape(folder.name)}.building.*"):
        lock_file = tmp / ".lock"
        if not lock_file.exists():
            if time.time() - tmp.stat().st_mtime < STALE_UNLOCKED_S:
                continue  # just created by another run, which is about to lock it
        elif fcntl is not None:
            with open(lock_file) as lock:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # another run is building in it
        else:
            continue
        shutil.rmtree(tmp, ignore_errors=True)
        removed.append(tmp)
        print(f"removed {tmp}: left by a run that was killed", file=sys.stderr)
    return removed


def replace_folder(tmp: Path, folder: str | Path) -> None:
    """Put the finished build `tmp` at `folder`, replacing an existing folder as a whole: the old one is
    renamed aside first, so `folder` holds either the old or the new output, never a mix of both."""
    folder = Path(folder)
    (tmp / ".lock").unlink(missing_ok=True)
    old = None
    if folder.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old.", dir=folder.parent))
        os.rename(folder, old / "x")
    os.rename(tmp, folder)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def batched(items: Iterable, n: int) -> Iterator[list]:
    """Lists of n consecutive items (the last may be shorter): itertools.batched, which needs Python 3.12."""
    batch = []
    for x in items:
        batch.append(x)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch
