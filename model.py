"""
GPT decoder in one file, nanoGPT style, with the options of the three pretraining papers.

Parameter names follow nanoGPT / Hugging Face GPT-2 (transformer.wte, transformer.h[i].attn.c_attn, ...,
lm_head), so GPT-2 and GPT-SW3 checkpoints map 1:1 (hf.load_gpt2 / hf.save_gpt2). Peak FLOP/s for MFU: mfu.py.
Options (GPTConfig): norm (norms.py), learned or rotary positions, GELU or SwiGLU MLP, per-head qk-norm,
grouped-query attention, tied or untied embeddings, nanoGPT or OEC (Xavier) init, logit soft-capping.
References: nanoGPT's model.py (Karpathy); OEC architecture and init: Stollenwerk, Lokrantz, Hertzberg 2026,
arXiv:2601.02031, and the authors' code ("OEC" below); norm placement: Stollenwerk 2025, arXiv:2503.21708;
GPT-SW3 shapes: Ekgren et al. 2023, arXiv:2305.12987.
"""
import math
from dataclasses import dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.distributed.tensor import DTensor, distribute_tensor

from losses import compute_loss, softcap
from mfu import device_peak_flops
from norms import NORMS, make_norm

POS = ("learned", "rope")
MLPS = ("gelu", "gelu_tanh", "swiglu")
INITS = ("normal", "xavier")


@dataclass
class GPTConfig:
    vocab_size: int = 50304  # GPT-2's 50257 padded up to a multiple of 64 for speed
    block_size: int = 1024  # context length
    n_layer: int = 12
    n_head: int = 12
    n_kv_head: int | None = None  # grouped-query attention: heads sharing keys/values; None = n_head
    n_embd: int = 768
    bias: bool = True  # biases in Linear layers and norms (GPT-2: True; OEC: False)
    dropout: float = 0.0
    norm: str = "layernorm"  # one of norms.NORMS, used at every norm site (ln_1, ln_2, ln_f, qk-norm)
    norm_alpha0: float = 0.5  # DyT alpha init; DyISRU beta0 = 1/alpha0^2 (Stollenwerk 2025, arXiv:2503.21708)
    norm_alpha0_attn: float | None = None  # ln_2's own init (post-attention; arXiv:2503.21708); None = same
    norm_init: float | None = None  # DyT/DyISRU raw alpha/beta at init as the DyISRU code's init_alpha/init_beta
    norm_init_attn: float | None = None  # (norms.make_norm); set, they replace norm_alpha0(_attn); None = same
    pos: str = "learned"  # 'learned' absolute positions (GPT-2) or 'rope' (OEC, rotary on half the head dim)
    rope_theta: float = 10000.0  # RoPE base: frequencies theta^(-2i/rotated dims) (Llama 2: 1e4, Llama 3: 5e5)
    rope_fraction: float = 0.5  # share of each head's channels RoPE rotates (OEC: 0.5; Llama, Qwen3: 1.0)
    mlp: str = "gelu"  # 'gelu' (exact, nanoGPT, GPT-SW3), 'gelu_tanh' (GPT-2's gelu_new), 'swiglu' (OEC)
    qk_norm: bool = False  # norm on q and k per head before attention (OEC; Wortsman et al. 2023, arXiv:2309.14322)
    tie_embeddings: bool = True  # lm_head.weight is transformer.wte.weight
    init: str = "normal"  # 'normal' (nanoGPT: N(0, 0.02)) or 'xavier' (OEC)
    logit_softcap: float | None = None  # c: logits <- c * tanh(logits / c) (OEC arXiv:2601.02031 v2, c = 30)

    def __post_init__(self):
        if self.n_kv_head is None:
            self.n_kv_head = self.n_head
        for key, value, valid in (("norm", self.norm, NORMS), ("pos", self.pos, POS), ("mlp", self.mlp, MLPS),
                                  ("init", self.init, INITS)):
            if value not in valid:
                raise ValueError(f"unknown {key}={value!r}: set {key} to one of {', '.join(valid)}")
        for key in ("vocab_size", "block_size", "n_layer", "n_head", "n_kv_head", "n_embd"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key}={getattr(self, key)} must be >= 1: change {key}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}: "
                             "change n_embd or n_head so that the head dim n_embd/n_head is an integer")
        if self.n_head % self.n_kv_head:
            raise ValueError(f"n_head={self.n_head} is not divisible by n_kv_head={self.n_kv_head}: "
                             "change n_kv_head to a divisor of n_head")
        rot = self.n_embd // self.n_head * self.rope_fraction
        if self.pos == "rope" and (rot != int(rot) or int(rot) % 2 or rot < 2 or self.rope_fraction > 1):
            raise ValueError(f"pos='rope' rotates pairs of channels in the first rope_fraction="
                             f"{self.rope_fraction} of each head, so the head dim n_embd/n_head="
                             f"{self.n_embd // self.n_head} times rope_fraction must be an even number of at "
                             "least 2 (rope_fraction <= 1): change n_embd, n_head or rope_fraction")
        if self.rope_theta <= 0:
            raise ValueError(f"rope_theta={self.rope_theta} must be > 0: change rope_theta")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout={self.dropout} must be in [0, 1): change dropout")
        for key in ("norm_alpha0", "norm_alpha0_attn", "logit_softcap"):
            if getattr(self, key) is not None and getattr(self, key) <= 0:
                raise ValueError(f"{key}={getattr(self, key)} must be > 0: change {key} (or set it to None)")
        if (self.norm_init is not None or self.norm_init_attn is not None) and self.norm in ("layernorm", "rmsnorm"):
            raise ValueError(f"norm_init / norm_init_attn are set but norm={self.norm!r} has no alpha/beta: set "
                             "them to None, or norm to dyt, dyt_sp, dyisru or dyisru_sp")


def _xavier_std(fan_in: int, fan_out: int) -> float:
    """Xavier/Glorot normal std, sqrt(2 / (fan_in + fan_out)) (Glorot & Bengio 2010, eq. 16; gain 1)."""
    return math.sqrt(2.0 / (fan_in + fan_out))


def _normal_(p: torch.Tensor, std: float) -> None:
    """Fill p with N(0, std^2) in place. A DTensor (an FSDP2 shard) gets its slice of one whole-tensor draw
    made identically on every rank (same seed): DTensor's own random ops give every CPU rank the same local
    draw (torch tracks RNG offsets per shard on CUDA only), and writing through views of a sharded parameter
    (chunk, slicing) writes into copies. Costs one temporary of the parameter's full size per rank."""
    if isinstance(p, DTensor):
        full = torch.empty(p.shape, dtype=p.dtype, device=p.to_local().device).normal_(0.0, std)
        p.to_local().copy_(distribute_tensor(full, p.device_mesh, p.placements, src_data_rank=None).to_local())
    else:
        p.normal_(0.0, std)


# ----------------------------------------------------------------------------------------------------
# Rotary position embedding, as in the OEC code (arXiv:2601.02031): lucidrains' RotaryEmbedding(dim=head_dim/2),
# i.e. only the first half of each head's channels is rotated, in interleaved pairs (0,1), (2,3), ...,
# with frequencies theta^(-2i/(head_dim/2)); the second half passes through unchanged. rope_fraction=1 rotates
# every channel (Su et al. 2021, arXiv:2104.09864, eq. 34; Llama); hf.py maps the pairs to HF's layouts.

def rope_cache(head_dim: int, T: int, theta: float = 10000.0,
               fraction: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin of shape (T, rot/2), rot = head_dim * fraction rotated channels: one angle per position and
    rotated pair."""
    rot = int(head_dim * fraction)
    inv_freq = 1.0 / theta ** (torch.arange(0, rot, 2, dtype=torch.float64) / rot)  # (rot/2,)
    angles = torch.outer(torch.arange(T, dtype=torch.float64), inv_freq)  # (T, rot/2), fp64: exact at large T
    return angles.cos().float(), angles.sin().float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the first 2 * cos.size(-1) channels of x (B, T, nh, hs) at positions given by cos/sin (T, rot/2)."""
    rot = 2 * cos.size(-1)
    x1, x2 = x[..., :rot].unflatten(-1, (-1, 2)).unbind(-1)  # (B, T, nh, rot/2) each
    cos, sin = cos[:, None, :].to(x.dtype), sin[:, None, :].to(x.dtype)  # (T, 1, rot/2)
    rotated = torch.stack((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).flatten(-2)
    return torch.cat((rotated, x[..., rot:]), dim=-1)


class KVCache:
    """Keys/values of every layer for generate(), allocated on first use: (B, n_kv_head, block_size, hs)."""

    def __init__(self, n_layer: int, block_size: int):
        self.k, self.v = [None] * n_layer, [None] * n_layer
        self.block_size = block_size
        self.pos = 0  # number of positions already cached (GPT.hidden_states advances it after all layers)

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (B, nkv, T, hs) at positions pos..pos+T and return all cached keys/values so far."""
        if self.k[layer] is None:
            shape = (k.size(0), k.size(1), self.block_size, k.size(3))
            self.k[layer] = k.new_empty(shape)
            self.v[layer] = v.new_empty(shape)
        end = self.pos + k.size(2)
        self.k[layer][:, :, self.pos:end] = k
        self.v[layer][:, :, self.pos:end] = v
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]


# ----------------------------------------------------------------------------------------------------

class CausalSelfAttention(nn.Module):

    def __init__(self, config: GPTConfig, layer: int):
        super().__init__()
        self.layer = layer
        self.n_head, self.n_kv_head = config.n_head, config.n_kv_head
        self.head_dim = config.n_embd // config.n_head
        # q, k, v projections for all heads in one matmul: [q (n_head) | k (n_kv_head) | v (n_kv_head)] * hs
        self.c_attn = nn.Linear(config.n_embd, (config.n_head + 2 * config.n_kv_head) * self.head_dim,
                                bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.qk_norm = config.qk_norm
        if config.qk_norm:  # per head, over the head dim (OEC: "qk-LayerNorm applied per head")
            self.q_norm = make_norm(config.norm, self.head_dim, bias=config.bias, alpha0=config.norm_alpha0,
                                    init=config.norm_init)
            self.k_norm = make_norm(config.norm, self.head_dim, bias=config.bias, alpha0=config.norm_alpha0,
                                    init=config.norm_init)
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, rope: tuple | None, kv_cache: KVCache | None) -> torch.Tensor:
        B, T, C = x.size()
        kv_dim = self.n_kv_head * self.head_dim
        q, k, v = self.c_attn(x).split([C, kv_dim, kv_dim], dim=2)
        q = q.view(B, T, self.n_head, self.head_dim)  # (B, T, nh, hs)
        k = k.view(B, T, self.n_kv_head, self.head_dim)  # (B, T, nkv, hs)
        v = v.view(B, T, self.n_kv_head, self.head_dim)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:  # after the qk-norm, as in the OEC code
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, nh|nkv, T, hs)
        mask, causal = None, True
        if kv_cache is not None:
            past = kv_cache.pos
            k, v = kv_cache.update(self.layer, k, v)  # (B, nkv, past+T, hs)
            if past:  # query i sees keys 0..past+i
                causal = False
                if T > 1:
                    mask = torch.ones(T, past + T, dtype=torch.bool, device=x.device).tril(past)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal,
                                           dropout_p=self.dropout if self.training else 0.0,
                                           enable_gqa=self.n_kv_head != self.n_head)  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


def swiglu_hidden(n_embd: int) -> int:
    """SwiGLU hidden size as in the OEC code (Modalities' SwiGLU): 256 * ceil((2/3 * 4d) / 256)."""
    return 256 * ((int(2 * 4 * n_embd / 3) + 255) // 256)


class MLP(nn.Module):

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.swiglu = config.mlp == "swiglu"
        if self.swiglu:
            hidden = swiglu_hidden(config.n_embd)
            self.c_fc = nn.Linear(config.n_embd, 2 * hidden, bias=config.bias)  # [gate W | value V]: 1 matmul
        else:
            hidden = 4 * config.n_embd
            self.c_fc = nn.Linear(config.n_embd, hidden, bias=config.bias)
        self.approximate = "tanh" if config.mlp == "gelu_tanh" else "none"
        self.c_proj = nn.Linear(hidden, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.c_fc(x)  # (B, T, hidden) or (B, T, 2*hidden)
        if self.swiglu:
            gate, value = x.chunk(2, dim=-1)
            x = F.silu(gate) * value  # SwiGLU: silu(xW) * (xV)
        else:
            x = F.gelu(x, approximate=self.approximate)
        return self.dropout(self.c_proj(x))


class Block(nn.Module):

    def __init__(self, config: GPTConfig, layer: int):
        super().__init__()
        alpha0_attn = config.norm_alpha0_attn or config.norm_alpha0
        init_attn = config.norm_init if config.norm_init_attn is None else config.norm_init_attn
        self.ln_1 = make_norm(config.norm, config.n_embd, bias=config.bias, alpha0=config.norm_alpha0,
                              init=config.norm_init)
        self.attn = CausalSelfAttention(config, layer)
        self.ln_2 = make_norm(config.norm, config.n_embd, bias=config.bias, alpha0=alpha0_attn, init=init_attn)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, rope: tuple | None, kv_cache: KVCache | None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), rope, kv_cache)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        modules = dict(wte=nn.Embedding(config.vocab_size, config.n_embd))
        if config.pos == "learned":
            modules["wpe"] = nn.Embedding(config.block_size, config.n_embd)
        modules["drop"] = nn.Dropout(config.dropout)
        modules["h"] = nn.ModuleList([Block(config, i) for i in range(config.n_layer)])
        modules["ln_f"] = make_norm(config.norm, config.n_embd, bias=config.bias, alpha0=config.norm_alpha0,
                                    init=config.norm_init)
        self.transformer = nn.ModuleDict(modules)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.transformer.wte.weight = self.lm_head.weight  # one Parameter (V, H)
        if config.pos == "rope":  # not saved: recomputed by init_weights (also after meta-device init)
            n_pairs = int(config.n_embd // config.n_head * config.rope_fraction) // 2
            self.register_buffer("rope_cos", torch.empty(config.block_size, n_pairs), persistent=False)
            self.register_buffer("rope_sin", torch.empty_like(self.rope_cos), persistent=False)
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """(Re)initialise every parameter and buffer, e.g. after `to_empty()` from a meta-device model.

        'normal' (nanoGPT): Linear and Embedding N(0, 0.02), biases 0.
        'xavier' (OEC): Linear (incl. lm_head) Xavier-normal, Embedding N(0, 1/sqrt(d)).
        Both: residual projections c_proj N(0, 0.02/sqrt(2L)) (GPT-2 paper). With 'xavier' and SwiGLU only
        attn.c_proj, because the OEC code's SwiGLU output layer is not named c_proj and so stays Xavier.
        A tied matrix gets the lm_head init (the OEC code initialises lm_head after wte, so it wins).
        Every weight is drawn whole, never through views of a parameter (see _normal_): under FSDP2 each
        rank gets its shard of the same draw as one process from the same seed (tests/test_parallel.py).
        """
        c = self.config
        for name, m in self.named_modules():
            if isinstance(m, nn.Linear):
                _normal_(m.weight, self._linear_std(name, m))
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Embedding):
                _normal_(m.weight, 0.02 if c.init == "normal" else c.n_embd ** -0.5)
            elif hasattr(m, "reset_parameters"):  # the norms (norms.py): constant fills
                m.reset_parameters()
        if c.pos == "rope":
            cos, sin = rope_cache(c.n_embd // c.n_head, c.block_size, c.rope_theta, c.rope_fraction)
            self.rope_cos.copy_(cos)
            self.rope_sin.copy_(sin)

    def _linear_std(self, name: str, m: nn.Linear) -> float:
        c = self.config
        oec_swiglu_out = c.init == "xavier" and c.mlp == "swiglu" and ".mlp." in name
        if name.endswith("c_proj") and not oec_swiglu_out:
            return 0.02 / math.sqrt(2 * c.n_layer)
        if c.init == "normal":
            return 0.02
        if name.endswith("mlp.c_fc") and c.mlp == "swiglu":
            # the OEC code has W and V as two (hidden, d) Linears, each Xavier-normal; both halves of our
            # fused (2*hidden, d) weight have that shape, so one draw with their std is the same init
            return _xavier_std(m.in_features, m.out_features // 2)
        return _xavier_std(m.in_features, m.out_features)

    def _apply(self, fn, recurse=True):
        # to_empty() from the meta device builds one new Parameter per module, untying wte from lm_head
        # (a 124M GPT-2 would train as 163M): tie them again after any device/dtype conversion
        super()._apply(fn, recurse)
        if self.config.tie_embeddings and self.transformer.wte.weight is not self.lm_head.weight:
            self.transformer.wte.weight = self.lm_head.weight
        return self

    def output_embedding(self) -> nn.Parameter:
        """The output embedding E (V, H) whose rows the OEC/Coupled-Adam methods act on."""
        return self.lm_head.weight

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameter count. non_embedding=True drops the lookup-only tables: wpe, and wte when untied
        (a tied wte is the lm_head matmul, so it counts, as in nanoGPT)."""
        n = sum(p.numel() for p in self.parameters())  # a tied Parameter is listed once
        if non_embedding:
            if "wpe" in self.transformer:
                n -= self.transformer.wpe.weight.numel()
            if not self.config.tie_embeddings:
                n -= self.transformer.wte.weight.numel()
        return n

    def forward(self, idx: torch.Tensor, *args, kv_cache: KVCache | None = None,
                targets: torch.Tensor | None = None, return_hidden: bool = False, **loss_weights: float):
        """idx (B, T) token ids -> logits (B, T, V) (soft-capped when config.logit_softcap is set);
        return_hidden=True: (logits, h) with h (B, T, C) the final hidden states after ln_f (the eval diagnostics).

        With targets (B, T) (IGNORE_INDEX = skip): the training loss instead, (total, terms) of
        losses.compute_loss with these loss_weights (z_loss=, mu_loss=, ...: losses.LOSS_TERMS). Computed in
        this forward so that torch.compile compiles the loss with the model: under bf16 the (B*T, V) logits
        are then not upcast and walked eagerly, several times, outside the graph.

        Every argument after idx is keyword-only. nanoGPT's `logits, loss = model(idx, targets)` raises a
        TypeError saying how to write it here, rather than returning another shape than nanoGPT's.
        """
        if args:
            raise TypeError(
                f"GPT.forward takes one positional argument, idx (B, T), got {1 + len(args)}: nanoGPT's "
                "`logits, loss = model(idx, targets)` is written `loss, terms = model(idx, targets=targets)` "
                "here (the mean loss and its terms; logits = model(idx)); a KV cache is passed as kv_cache=")
        h = self.hidden_states(idx, kv_cache)  # (B, T, C)
        logits = self._logits(h)
        if targets is None:
            return (logits, h) if return_hidden else logits
        return compute_loss(logits, targets, self.output_embedding(), **loss_weights)

    def hidden_states(self, idx: torch.Tensor, kv_cache: KVCache | None = None) -> torch.Tensor:
        B, T = idx.size()
        start = kv_cache.pos if kv_cache is not None else 0
        if start + T > self.config.block_size:
            raise ValueError(f"sequence of length {start + T} is longer than "
                             f"block_size={self.config.block_size}: crop the input or train with a larger "
                             "block_size")
        x = self.transformer.wte(idx)  # (B, T, C)
        rope = None
        if self.config.pos == "learned":
            x = x + self.transformer.wpe(torch.arange(start, start + T, device=idx.device))  # + (T, C)
        else:
            rope = (self.rope_cos[start:start + T], self.rope_sin[start:start + T])
        x = self.transformer.drop(x)
        for block in self.transformer.h:
            x = block(x, rope, kv_cache)
        if kv_cache is not None:
            kv_cache.pos += T
        return self.transformer.ln_f(x)

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.lm_head(x)
        if self.config.logit_softcap:
            logits = softcap(logits, self.config.logit_softcap)
        return logits

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, stop_tokens: list[int] | None = None) -> torch.Tensor:
        """Append max_new_tokens sampled tokens to idx (B, T), using a KV cache. temperature=0 is greedy.

        Stops early once every row has produced one of stop_tokens (later tokens of finished rows are
        still sampled: the caller truncates). Past block_size the context is cropped to the last
        block_size tokens, as in nanoGPT; the cache is then refilled each step (positions cannot slide).
        """
        bs = self.config.block_size
        kv = None
        done = torch.zeros(idx.size(0), dtype=torch.bool, device=idx.device)
        stop = torch.tensor(stop_tokens or [], dtype=idx.dtype, device=idx.device)
        for _ in range(max_new_tokens):
            if kv is None or kv.pos >= bs:
                kv = KVCache(self.config.n_layer, bs)
                x = self.hidden_states(idx[:, -bs:], kv)
            else:
                x = self.hidden_states(idx[:, -1:], kv)
            logits = self._logits(x[:, -1, :]).float()  # (B, V)
            if temperature == 0:
                idx_next = logits.argmax(dim=-1, keepdim=True)
            else:
                logits = logits / temperature
                if top_k is not None:
                    v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
                    logits[logits < v[:, [-1]]] = -float("inf")
                idx_next = torch.multinomial(F.softmax(logits, dim=-1), num_samples=1)  # (B, 1)
            idx = torch.cat((idx, idx_next), dim=1)
            done |= torch.isin(idx_next[:, 0], stop)
            if stop.numel() and bool(done.all()):
                break
        return idx

    # ------------------------------------------------------------------------------------------------
    # FLOPs and MFU

    def flops_per_token(self, seq_len: int | None = None) -> float:
        """Training FLOPs per token, 6N + 12*L*T*d (PaLM, Chowdhery et al. 2022, arXiv:2204.02311,
        appendix B). T = seq_len, the length of the training windows (default: block_size, the context)."""
        c = self.config
        return 6 * self.num_params() + 12 * c.n_layer * (seq_len or c.block_size) * c.n_embd

    def estimate_mfu(self, tokens_per_sec: float, device: torch.device | str, seq_len: int | None = None,
                     dtype: torch.dtype = torch.float32) -> float | None:
        """Model FLOPs utilisation: achieved training FLOP/s (tokens_per_sec per device) as a fraction of the
        device's peak (mfu.peak_flops, fixed for the run), or None where there is no honest peak (CPU)."""
        peak = device_peak_flops(device, dtype)
        return None if peak is None else self.flops_per_token(seq_len) * tokens_per_sec / peak


# ----------------------------------------------------------------------------------------------------
# Presets: GPTConfig kwargs reproducing published shapes (train.py sets vocab_size from the dataset)

def _gpt2_like(n_layer: int, n_head: int, n_embd: int, **kw) -> dict:
    return dict(n_layer=n_layer, n_head=n_head, n_embd=n_embd, norm="layernorm", pos="learned",
                qk_norm=False, tie_embeddings=True, init="normal", **kw)


def _oec(n_layer: int, n_embd: int) -> dict:  # OEC (arXiv:2601.02031): n_head = 4 for every size
    return dict(n_layer=n_layer, n_head=4, n_embd=n_embd, vocab_size=50304, block_size=2048, bias=False,
                norm="layernorm", pos="rope", mlp="swiglu", qk_norm=True, tie_embeddings=False, init="xavier")


# GPT-SW3 (Ekgren et al. 2023, arXiv:2305.12987): vocab 64000, context 2048, biases, exact GELU, tied. Its init std
# (0.023 ... 0.007, `init_method_std`) is not reproduced: init='normal' uses nanoGPT's 0.02.
_SW3 = dict(vocab_size=64000, block_size=2048, bias=True, mlp="gelu")
# Coupled Adam (Stollenwerk & Stollenwerk 2025, arXiv:2502.08441) and DyISRU (arXiv:2503.21708): nanoGPT GPT-2
# on OWT, nanoGPT defaults (bias=False, vocab 50304, exact GELU, context 1024); the DyISRU tables' "DyISRU" is
# the softplus variant.
_NANOGPT = dict(vocab_size=50304, block_size=1024, bias=False, mlp="gelu")

PRESETS: dict[str, dict] = {
    "gpt2": _gpt2_like(12, 12, 768, vocab_size=50257, block_size=1024, bias=True, mlp="gelu_tanh"),
    "gpt-sw3-126m": _gpt2_like(12, 12, 768, **_SW3),
    "gpt-sw3-356m": _gpt2_like(24, 16, 1024, **_SW3),
    "gpt-sw3-1.3b": _gpt2_like(24, 32, 2048, **_SW3),
    "gpt-sw3-6.7b": _gpt2_like(32, 32, 4096, **_SW3),
    "gpt-sw3-20b": _gpt2_like(44, 48, 6144, **_SW3),
    "gpt-sw3-40b": _gpt2_like(48, 64, 8192, **_SW3),
    "oec-16m": _oec(6, 224),
    "oec-29m": _oec(9, 320),
    "oec-57m": _oec(12, 480),
    "oec-109m": _oec(15, 640),
    "oec-221m": _oec(21, 832),
    "coupled-adam-125m": _gpt2_like(12, 12, 768, **_NANOGPT),
    "coupled-adam-355m": _gpt2_like(24, 16, 1024, **_NANOGPT),
    "coupled-adam-760m": _gpt2_like(24, 16, 1536, **_NANOGPT),
    "dyisru-125m": _gpt2_like(12, 12, 768, **_NANOGPT) | dict(norm="dyisru_sp"),
    "dyisru-760m": _gpt2_like(24, 16, 1536, **_NANOGPT) | dict(norm="dyisru_sp"),
}


# GPTConfig keys a train.py config sets (vocab_size comes from the data)
MODEL_KEYS = [f.name for f in fields(GPTConfig) if f.name != 'vocab_size']


def gpt_config_args(cfg: dict, set_keys: frozenset, vocab_size: int) -> dict:
    """GPTConfig kwargs: the preset (if any), then every model key you set (whatever its value; the
    defaults fill what the preset leaves open), the vocabulary padded up to vocab_multiple."""
    preset = dict(PRESETS[cfg['model_preset']]) if cfg['model_preset'] else {}
    args = {k: cfg[k] if k in set_keys or k not in preset else preset[k] for k in MODEL_KEYS}
    multiple = cfg['vocab_multiple'] or 1  # resolved before the model (None: 64 on CUDA, 1 on CPU)
    return dict(args, vocab_size=math.ceil(vocab_size / multiple) * multiple)
