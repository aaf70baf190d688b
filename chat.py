"""
Chat data for instruction fine-tuning (train.py --init_from=finetune): reading chat JSONL
(load_chat_jsonl), the GPT-SW3 instruct format with its loss mask (format_chat), and padded batches of whole
conversations (ChatLoader). Format: Hugging Face transformers' GPTSw3Tokenizer chat template
(models/gpt_sw3/tokenization_gpt_sw3.py) for the GPT-SW3 models of Ekgren et al. 2023, arXiv:2305.12987.
"""
import json
import warnings
from pathlib import Path

import torch

from documents import has_surrogate
from loader import Stream, to_device
from losses import IGNORE_INDEX
from tokenizer import Tokenizer


def _decode(path: Path, raw: bytes) -> str:
    """UTF-8 text of a whole file, or an error naming the file, line and byte offset."""
    bad = raw.find(b"\x00")
    try:
        if bad >= 0:
            raise UnicodeDecodeError("utf-8", raw, bad, bad + 1, "NUL byte (binary file?)")
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise ValueError(f"{path}:{line}, byte offset {e.start}: not UTF-8 text ({e.reason}); convert it, "
                         f"e.g. `iconv -f latin1 -t utf-8`") from None


def _json_lines(path: Path, text: str):
    """(line number, record) for each non-empty line; invalid JSON stops with file:line."""
    for lineno, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{lineno}: invalid JSON ({e.msg}, column {e.colno}); fix or delete "
                             f"the line (JSONL = one JSON object per line)") from None
        if has_surrogate(record):  # an escaped half of an emoji: no tokenizer can encode it
            raise ValueError(f"{path}:{lineno}: unpaired UTF-16 surrogate in a JSON string; the writer cut a "
                             f"UTF-16 pair (e.g. an emoji) in half: fix the record")
        yield lineno, record


CHAT_HEADERS = {"user": "User:", "assistant": "Bot:"}


def load_chat_jsonl(path: str | Path) -> list[list[dict]]:
    """{"messages": [{"role": "user"|"assistant", "content": str}, ...]} per line -> list of message lists.
    Invalid JSON stops with file:line. Records with an unknown role, a bad message, or no assistant turn are
    skipped, counted, and reported in one warning (with their line numbers)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"chat file {path} not found")
    out, bad = [], {}
    for lineno, record in _json_lines(path, _decode(path, path.read_bytes())):
        problem = _chat_problem(record)
        if problem:
            bad.setdefault(problem, []).append(lineno)
        else:
            out.append(record["messages"])
    if bad:
        n_bad = sum(map(len, bad.values()))
        detail = "; ".join(f"{len(v)} {k} (lines {', '.join(map(str, v[:10]))}{', ...' * (len(v) > 10)})"
                           for k, v in bad.items())
        warnings.warn(f"{path}: skipped {n_bad} of {n_bad + len(out)} records: {detail}", stacklevel=2)
    if not out:
        raise ValueError(f"{path}: no valid chat records; each line must be "
                         f'{{"messages": [{{"role": "user", "content": "..."}}, '
                         f'{{"role": "assistant", "content": "..."}}]}}')
    return out


def _chat_problem(record) -> str | None:
    msgs = record.get("messages") if isinstance(record, dict) else None
    if not isinstance(msgs, list) or not msgs:
        return "without a 'messages' list"
    if not all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in msgs):
        return "with a message lacking string 'content'"
    if any(m.get("role") not in CHAT_HEADERS for m in msgs):
        return "with an unknown role (allowed: user, assistant)"
    if not any(m["role"] == "assistant" for m in msgs):
        return "without an assistant turn"
    return None


def format_chat(messages: list[dict], tok: Tokenizer, add_generation_prompt: bool = False,
                sep: str = " ") -> tuple[list[int], list[int]]:
    """GPT-SW3 instruct format (HF GPTSw3Tokenizer's chat template):
        <|endoftext|><s>User: {user}<s>Bot: {assistant}<s>User: ...<s>[Bot:]
    Each turn is encoded on its own, as HF's tokenizer does between special tokens (so SentencePiece's
    dummy prefix puts the space after 'Bot:'). sep=' ' is the HF template; sep='\\n' gives the model
    card's 'User:\\n{text}' form, whose published ids ([..., 2, 22493 'Bot', 63458 ':', 18 '\\n']) show the
    newlines next to <s> dropped. Tokenizers without <s> (tiktoken) use <|endoftext|> in its place.
    loss_mask is 1 exactly on the assistant's content tokens and the <s> that closes its turn (so the
    model learns to stop), 0 on the prompt: <|endoftext|>, <s>, user turns and the 'Bot:' header.
    add_generation_prompt appends the 'Bot:' header (mask 0) for sampling."""
    turn_end = tok.bos if tok.bos is not None else tok.eot
    ids = [tok.eot] + ([tok.bos] if tok.bos is not None else [])
    mask = [0] * len(ids)
    for m in messages:
        header = CHAT_HEADERS.get(m.get("role"))
        if header is None:
            raise ValueError(f"unknown chat role {m.get('role')!r}: use 'user' or 'assistant'")
        turn = tok.encode(header + sep + m["content"])
        bot = m["role"] == "assistant"
        n_head = _common_prefix(turn, tok.encode(header + sep.rstrip(" "))) if bot else len(turn)
        ids += turn + [turn_end]
        mask += [0] * n_head + [1] * (len(turn) - n_head) + [int(bot)]
    if add_generation_prompt:
        prompt = tok.encode(CHAT_HEADERS["assistant"] + sep.rstrip(" "))
        ids, mask = ids + prompt, mask + [0] * len(prompt)
    return ids, mask


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


class ChatLoader:
    """Padded batches of whole conversations for instruction fine-tuning. Each conversation (format_chat,
    truncated to block_size + 1 tokens) gives x = ids[:-1] and y = ids[1:] with y = IGNORE_INDEX where the
    target is not trained on; a batch is padded to its longest example (x with EOT, y with IGNORE_INDEX).
    Order and sharding: the Stream rule (a seeded permutation per epoch), resumable via state_dict()."""

    def __init__(self, conversations: list[list[dict]], tok: Tokenizer, batch_size: int, block_size: int,
                 rank: int = 0, world_size: int = 1, seed: int = 1337, sep: str = " ",
                 device: str | torch.device = "cpu"):
        self.examples, truncated, dropped = [], 0, 0
        for messages in conversations:
            ids, mask = format_chat(messages, tok, sep=sep)
            truncated += len(ids) > block_size + 1
            ids, mask = ids[:block_size + 1], mask[:block_size + 1]
            if sum(mask[1:]) == 0:  # the assistant turns were cut off: nothing to learn from
                dropped += 1
                continue
            self.examples.append((ids, mask))
        if truncated:
            warnings.warn(f"{truncated} of {len(conversations)} conversations are longer than block_size + 1 "
                          f"= {block_size + 1} tokens and were truncated ({dropped} of them dropped: no "
                          f"assistant token left); raise block_size to keep them whole", stacklevel=2)
        self.pad, self.block_size, self.device = tok.eot, block_size, device
        self.stream = Stream(len(self.examples), batch_size, rank, world_size, seed, "chat conversations")

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """-> x (B, L) int64, y (B, L) int64 with IGNORE_INDEX off the assistant tokens; L <= block_size.
        Sets last_real_tokens (x's tokens, no padding) and last_trained_tokens (y's targets that are not
        IGNORE_INDEX): host numbers, so the training step reads nothing back from the device to count them."""
        batch = [self.examples[i] for i in self.stream.next_indices()]
        self.last_real_tokens = sum(len(ids) - 1 for ids, _ in batch)  # x's tokens without the padding
        self.last_trained_tokens = sum(sum(mask[1:]) for _, mask in batch)  # y != IGNORE_INDEX, counted on the host
        L = max(len(ids) for ids, _ in batch) - 1
        x = torch.full((len(batch), L), self.pad, dtype=torch.int64)
        y = torch.full((len(batch), L), IGNORE_INDEX, dtype=torch.int64)
        for b, (ids, mask) in enumerate(batch):
            t = torch.tensor(ids)
            x[b, :len(ids) - 1] = t[:-1]
            y[b, :len(ids) - 1] = torch.where(torch.tensor(mask[1:]).bool(), t[1:], IGNORE_INDEX)
        return to_device(x, y, self.device)

    @property
    def epoch(self) -> int:
        return self.stream.epoch

    def state_dict(self) -> dict:
        return self.stream.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.stream.load_state_dict(state)
