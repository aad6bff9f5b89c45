"""A lean single-token decode step for Llama-family decoders, used by `FastSampler` after the prefill.

    decoder, reason = lean_decoder(model, base_model)     # (None, why) when it cannot vouch for the model
    logits = decoder.step(input_ids, attention_mask, position_ids, cache)   # (n, V) for input_ids (n, 1)

Why it exists: on a small model much of a decode step through transformers'
own forward is Python around the arithmetic: the module call machinery,
`create_causal_mask`, the attention-interface lookup, output capture and
keyword plumbing of every layer. On one CPU thread (2 cores loaded by other
jobs), a decode step of the embedded tiny model (Qwen2, 4 layers, hidden 128)
took 3.3-3.9 ms through the model's forward and 2.6-2.8 ms through this step
at 8 rows, 11.2-12.1 against 10.2-10.5 ms at 64 rows; what is left is mostly
the matrix products and the attention kernel. torch.compile of the model's
forward gained 1.1-1.3x for a compile of about 108 s.

What it does: the same math in the same order as the model's own forward for
one new position per row, with the library's own pieces wherever they exist
(each RMSNorm's and activation's own `forward`, the model's `rotary_emb` once
per step for every layer, the modeling module's `apply_rotary_pos_emb`, the
cache's `update`, and the attention function the model itself would pick
through `ALL_ATTENTION_FUNCTIONS`, given the mask transformers would build:
none when no position is padded, else a boolean (n, 1, 1, L) for sdpa and its
0 / -inf float form for eager). The projections are `F.linear` on each
module's own weight and bias, read at every step, so weights updated between
calls are always the ones used; nothing is fused or copied.

What it refuses, leaving the decode to the model's own forward: anything that
is not exactly a transformers `Qwen2ForCausalLM` or `LlamaForCausalLM` built
of the modeling module's own classes (a peft wrapper, LoRA or quantized
layers, a subclass, remote code), hooks or instance-level `forward`
replacements on any module (accelerate, kernels), sliding windows,
`pretraining_tp > 1`, attention other than sdpa or eager, training mode, and
parameters that are not all float32, bfloat16 or float16 (the dtypes, with and
without autocast, whose logits were tested to equal the model's own decode).
Autocast applies to the same calls as in the model's forward, so the step runs
inside the caller's autocast context.

Shared prompts (`SharedPrefixLayer`): when B prompts are sampled G times each
in float32, the cache keeps each prompt's keys and values once and each row's
own tokens apart, and a row's query meets its prompt's keys in one product per
prompt, with one softmax over prompt and own positions (eager attention's
math, split in two; its logits equal the model's own decode within 1e-5).
The G copies of a prompt were most of what a decode step's attention read: at
8 prompts x 8 samples of 250 tokens, a layer's attention took 1.4 ms through
sdpa over the copies and 0.6 ms split (one thread), and a whole sample call
ran 1.21x faster at 32 new tokens, 1.26x at 128 (`bench/generation_bench.py`,
2 cores loaded by other jobs). In other dtypes the split would round
differently from the model's own attention, so there the cache is copied to
each sample.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules import module as _module
from transformers.cache_utils import DynamicLayer
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.llama import modeling_llama
from transformers.models.qwen2 import modeling_qwen2
from transformers.utils import is_kernels_available

# Each supported causal LM class: its modeling module and the prefix of its classes there.
_FAMILIES = {
    modeling_qwen2.Qwen2ForCausalLM: (modeling_qwen2, "Qwen2"),
    modeling_llama.LlamaForCausalLM: (modeling_llama, "Llama"),
}
_DTYPES = {torch.float32, torch.bfloat16, torch.float16}


def _structure_reason(base_model, modeling, prefix: str) -> str | None:
    """Why the module tree is not exactly the modeling module's own, or None."""
    inner = getattr(base_model, "model", None)
    expected = [("model", inner, getattr(modeling, f"{prefix}Model")),
                ("lm_head", getattr(base_model, "lm_head", None), nn.Linear)]
    if type(inner) is getattr(modeling, f"{prefix}Model"):
        expected += [("embed_tokens", inner.embed_tokens, nn.Embedding),
                     ("rotary_emb", inner.rotary_emb, getattr(modeling, f"{prefix}RotaryEmbedding")),
                     ("norm", inner.norm, getattr(modeling, f"{prefix}RMSNorm"))]
        for i, layer in enumerate(inner.layers):
            expected.append((f"layers.{i}", layer, getattr(modeling, f"{prefix}DecoderLayer")))
            if type(layer) is not getattr(modeling, f"{prefix}DecoderLayer"):
                continue
            attn, mlp = layer.self_attn, layer.mlp
            expected += [(f"layers.{i}.self_attn", attn, getattr(modeling, f"{prefix}Attention")),
                         (f"layers.{i}.mlp", mlp, getattr(modeling, f"{prefix}MLP")),
                         (f"layers.{i}.input_layernorm", layer.input_layernorm, getattr(modeling, f"{prefix}RMSNorm")),
                         (f"layers.{i}.post_attention_layernorm", layer.post_attention_layernorm,
                          getattr(modeling, f"{prefix}RMSNorm"))]
            expected += [(f"layers.{i}.self_attn.{p}", getattr(attn, p, None), nn.Linear)
                         for p in ("q_proj", "k_proj", "v_proj", "o_proj")]
            expected += [(f"layers.{i}.mlp.{p}", getattr(mlp, p, None), nn.Linear)
                         for p in ("gate_proj", "up_proj", "down_proj")]
    for name, module, cls in expected:
        if type(module) is not cls:
            return f"its {name} is a {type(module).__name__}, not a {cls.__name__}"
    if len(inner.layers) != base_model.config.num_hidden_layers:
        return f"it has {len(inner.layers)} layers, its config {base_model.config.num_hidden_layers}"
    for i, layer in enumerate(inner.layers):
        if getattr(layer.self_attn, "sliding_window", None) is not None:
            return f"its layer {i} attends through a sliding window"
        if layer.self_attn.layer_idx != i:
            return f"its layer {i} has layer_idx {layer.self_attn.layer_idx}"
    if inner.embed_tokens.max_norm is not None:
        return "its embedding renormalizes (max_norm)"
    return None


def lean_unsupported_reason(model, base_model) -> str | None:
    """Why the lean step cannot vouch for computing what `model`'s own forward computes, or None.

    Checked at every sample call: training mode, dtypes and hooks can change between calls.
    """
    family = _FAMILIES.get(type(base_model))
    if family is None:
        return f"{type(base_model).__name__} is not one of {', '.join(c.__name__ for c in _FAMILIES)}"
    if model is not base_model:
        return f"the model runs through a {type(model).__name__} wrapper (peft or other), not its base model"
    config = base_model.config
    if config._attn_implementation not in ("sdpa", "eager"):
        return f"its attention implementation is {config._attn_implementation!r}, not sdpa or eager"
    if (getattr(config, "pretraining_tp", 1) or 1) > 1:
        return f"its pretraining_tp is {config.pretraining_tp}"
    if getattr(config, "use_sliding_window", False) or any(
            t != "full_attention" for t in (getattr(config, "layer_types", None) or ())):
        return "it uses sliding-window attention"
    if is_kernels_available():
        return "the kernels package is installed, and hub kernels may replace the modeling code"
    reason = _structure_reason(base_model, *family)
    if reason is not None:
        return reason
    modules = list(base_model.modules())
    if any(m.training for m in modules):
        return "it is in training mode"
    if _module._global_forward_hooks or _module._global_forward_pre_hooks:
        return "global module hooks are registered"
    for m in modules:
        if m._forward_hooks or m._forward_pre_hooks or "forward" in vars(m):
            return f"a {type(m).__name__} has forward hooks or a replaced forward"
    dtypes = {p.dtype for p in base_model.parameters()}
    if len(dtypes) != 1 or not dtypes <= _DTYPES:
        return f"its parameters are {', '.join(sorted(str(d) for d in dtypes))}, not all one of float32, bfloat16, float16"
    return None


def lean_decoder(model, base_model) -> tuple[LeanDecoder | None, str | None]:
    """(a `LeanDecoder` for this call, None), or (None, why not)."""
    reason = lean_unsupported_reason(model, base_model)
    return (None, reason) if reason is not None else (LeanDecoder(base_model), None)


class LeanDecoder:
    """The decode step of one vetted model, for one sample call (it holds modules, never weights)."""

    def __init__(self, base_model):
        modeling, prefix = _FAMILIES[type(base_model)]
        inner = base_model.model
        config = base_model.config
        self.embed, self.rotary, self.lm_head = inner.embed_tokens, inner.rotary_emb, base_model.lm_head
        self.norm = inner.norm.forward
        self.layers = [
            (layer.input_layernorm.forward, layer.self_attn, layer.post_attention_layernorm.forward,
             layer.mlp.act_fn.forward, layer.mlp)
            for layer in inner.layers
        ]
        self.apply_rotary_pos_emb = modeling.apply_rotary_pos_emb
        self.eager = config._attn_implementation == "eager"
        self.attention = ALL_ATTENTION_FUNCTIONS.get_interface(config._attn_implementation,
                                                               modeling.eager_attention_forward)
        # Qwen2's attention passes its (here always None) sliding window to the attention function.
        self.attention_kwargs = {"sliding_window": None} if prefix == "Qwen2" else {}

    def shares_prefixes(self, autocast) -> bool:
        """Whether `SharedPrefixLayer` may serve this model's decode steps: float32 weights, and no autocast."""
        param = next(self.lm_head.parameters())
        with autocast():
            return param.dtype == torch.float32 and not torch.is_autocast_enabled(param.device.type)

    def _mask(self, attention_mask: Tensor, dtype: torch.dtype) -> Tensor | None:
        """The mask transformers builds for one query over the L cached positions: (n, 1, 1, L), or None for sdpa."""
        if not self.eager and bool(attention_mask.all()):
            return None  # no padding: sdpa attends to everything, as create_causal_mask then decides
        mask = attention_mask.bool()[:, None, None, :]  # (n, 1, 1, L)
        if self.eager:
            mask = torch.where(mask, torch.zeros((), device=mask.device, dtype=dtype), torch.finfo(dtype).min)
        return mask

    def step(self, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor, cache) -> Tensor:
        """Logits (n, V) of the next token for one new token per row: input_ids and position_ids (n, 1), mask (n, L)."""
        n = input_ids.shape[0]
        embed = self.embed
        hidden = F.embedding(input_ids, embed.weight, embed.padding_idx)  # (n, 1, D)
        cos, sin = self.rotary(hidden, position_ids)  # (n, 1, Dh) each, shared by every layer
        mask = None if isinstance(cache.layers[0], SharedPrefixLayer) else self._mask(attention_mask, hidden.dtype)
        for i, (input_norm, attn, post_norm, act, mlp) in enumerate(self.layers):
            residual = hidden
            x = input_norm(hidden)
            shape = (n, 1, -1, attn.head_dim)
            q = F.linear(x, attn.q_proj.weight, attn.q_proj.bias).view(shape).transpose(1, 2)  # (n, Hq, 1, Dh)
            k = F.linear(x, attn.k_proj.weight, attn.k_proj.bias).view(shape).transpose(1, 2)  # (n, Hkv, 1, Dh)
            v = F.linear(x, attn.v_proj.weight, attn.v_proj.bias).view(shape).transpose(1, 2)  # (n, Hkv, 1, Dh)
            q, k = self.apply_rotary_pos_emb(q, k, cos, sin)
            layer = cache.layers[i]
            if isinstance(layer, SharedPrefixLayer):
                layer.append(k, v)
                out = layer.attend(q, attn.scaling)  # (n, 1, Hq, Dh)
            else:
                k, v = cache.update(k, v, i)  # (n, Hkv, L, Dh): the filled part of the cache
                out, _ = self.attention(attn, q, k, v, mask, dropout=0.0, scaling=attn.scaling,
                                        **self.attention_kwargs)
            out = out.reshape(n, 1, -1).contiguous()  # (n, 1, Hq * Dh)
            hidden = residual + F.linear(out, attn.o_proj.weight, attn.o_proj.bias)
            residual = hidden
            x = post_norm(hidden)
            gate, up, down = mlp.gate_proj, mlp.up_proj, mlp.down_proj
            x = F.linear(act(F.linear(x, gate.weight, gate.bias)) * F.linear(x, up.weight, up.bias), down.weight, down.bias)
            hidden = residual + x
        hidden = self.norm(hidden)
        return F.linear(hidden[:, -1:, :], self.lm_head.weight, self.lm_head.bias)[:, -1]  # (n, V)


def filled_rows(buffer: Tensor, index: Tensor, length: int, dim: int) -> Tensor:
    """A cache buffer of the batch rows `index` (in that order) in which only the first `length` positions along
    `dim`, the filled ones, are copied; the rest is left as allocated."""
    out = buffer.new_empty(len(index), *buffer.shape[1:])
    out.narrow(dim, 0, length).copy_(buffer.narrow(dim, 0, length)[index])
    return out


class SharedPrefixLayer(DynamicLayer):
    """One layer's cache for B prompts x G samples that holds each prompt's keys and values once.

    The prefill (B rows, through the model's own forward) stores the prompts'
    keys (B, Hkv, Dh, P, transposed for the product) and values (B, Hkv, P,
    Dh); each decode step `append`s one position per batch row to the rows'
    own keys (n, Hkv, Dh, T) and values (n, Hkv, T, Dh); `attend` is the
    step's attention.
    `rows` holds each batch row's slot prompt * G + sample, so rows can be
    dropped (`select_rows`) and still find their prompt. Only the prefill may
    go through `update`: the model's own attention cannot read this layout.
    """

    def __init__(self, prompt_mask: Tensor, G: int, max_new_tokens: int):
        super().__init__()
        self.prompt_mask = prompt_mask.bool()  # (B, P) False on padding
        self.G, self.max_new_tokens = G, max_new_tokens
        self.rows = torch.arange(prompt_mask.shape[0] * G, device=prompt_mask.device)  # (n,)
        self.length = 0  # own positions filled

    def update(self, key_states: Tensor, value_states: Tensor, *args, **kwargs) -> tuple[Tensor, Tensor]:
        if self.is_initialized:
            raise RuntimeError("a shared-prefix cache takes the prefill only; decode steps go through the lean step")
        B, heads, _, Dh = key_states.shape
        if B != self.prompt_mask.shape[0]:
            raise RuntimeError(f"a shared-prefix cache of {self.prompt_mask.shape[0]} prompts was given {B}")
        self.dtype, self.device = key_states.dtype, key_states.device
        self.prefix_keys_t = key_states.transpose(-1, -2).contiguous()  # (B, Hkv, Dh, P), as the product reads it
        self.prefix_values = value_states  # (B, Hkv, P, Dh)
        # The additive mask eager attention builds for padding: 0 where attended, the dtype's minimum where not.
        self.padding = torch.zeros(self.prompt_mask.shape, dtype=key_states.dtype, device=self.device).masked_fill(
            ~self.prompt_mask, torch.finfo(key_states.dtype).min)[:, None, None, :]  # (B, 1, 1, P)
        N = B * self.G
        self.key_buffer = key_states.new_empty(N, heads, Dh, self.max_new_tokens)  # (N, Hkv, Dh, T)
        self.value_buffer = value_states.new_empty(N, heads, self.max_new_tokens, value_states.shape[-1])
        self.is_initialized = True
        return key_states, value_states

    def get_seq_length(self) -> int:
        return self.prefix_keys_t.shape[-1] + self.length if self.is_initialized else 0

    def append(self, key_states: Tensor, value_states: Tensor) -> None:
        """Write one new position (n, Hkv, 1, Dh) of every batch row."""
        if self.length == self.max_new_tokens:
            raise RuntimeError(f"the shared-prefix cache holds {self.max_new_tokens} new positions")
        self.key_buffer[..., self.length].copy_(key_states[:, :, 0])
        self.value_buffer[:, :, self.length].copy_(value_states[:, :, 0])
        self.length += 1

    def select_rows(self, index: Tensor) -> None:
        """Keep only the batch rows `index` (in that order), copying just their filled positions."""
        self.key_buffer = filled_rows(self.key_buffer, index, self.length, dim=3)  # (n', Hkv, Dh, T)
        self.value_buffer = filled_rows(self.value_buffer, index, self.length, dim=2)  # (n', Hkv, T, Dh)
        self.rows = self.rows[index]

    def _to_grid(self, x: Tensor) -> Tensor:
        """(n, Hkv, rep, X) by batch row -> (B, Hkv, G * rep, X): each prompt's rows side by side, zeros where dropped."""
        B, G = self.prompt_mask.shape[0], self.G
        if len(self.rows) != B * G:
            x = x.new_zeros(B * G, *x.shape[1:]).index_copy_(0, self.rows, x)
        return x.view(B, G, *x.shape[1:]).transpose(1, 2).reshape(B, x.shape[1], -1, x.shape[-1])

    def _from_grid(self, x: Tensor, rep: int) -> Tensor:
        """The inverse of `_to_grid`: (B, Hkv, G * rep, X) -> (n, Hkv, rep, X) for the batch rows."""
        B, heads = x.shape[:2]
        x = x.reshape(B, heads, self.G, rep, x.shape[-1]).transpose(1, 2).reshape(B * self.G, heads, rep, x.shape[-1])
        return x if len(self.rows) == B * self.G else x[self.rows]

    def attend(self, query: Tensor, scaling: float) -> Tensor:
        """Attention output (n, 1, Hq, Dh) of one query per row (n, Hq, 1, Dh) over its prompt and its own positions.

        Eager attention's math: scores scaled after the product, the padding
        mask added, softmax in float32 over the prompt's and the row's own
        positions together, then the weighted sum of both parts' values. The
        prompt's part stays in the (prompt, sample) grid, so only the queries,
        the own part and the output move between layouts.
        """
        n, Hq, _, Dh = query.shape
        heads, _, P = self.prefix_keys_t.shape[1:]
        rep = Hq // heads  # query heads per key/value head, as repeat_kv pairs them
        q = query.view(n, heads, rep, Dh)
        grid = self._to_grid(q).flatten(0, 1)  # (B * Hkv, G * rep, Dh)
        prefix = torch.bmm(grid, self.prefix_keys_t.flatten(0, 1)).view(-1, heads, grid.shape[1], P)
        prefix = prefix * scaling + self.padding  # (B, Hkv, G * rep, P)
        t = self.length
        own = torch.bmm(q.flatten(0, 1), self.key_buffer.flatten(0, 1)[..., :t]).view(n, heads, rep, t) * scaling
        scores = torch.cat([prefix, self._to_grid(own)], dim=-1)  # (B, Hkv, G * rep, P + t)
        weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
        out = torch.bmm(weights[..., :P].flatten(0, 1), self.prefix_values.flatten(0, 1))  # (B * Hkv, G * rep, Dh)
        out = self._from_grid(out.view(*prefix.shape[:3], Dh), rep)  # (n, Hkv, rep, Dh)
        own_weights = self._from_grid(weights[..., P:], rep).flatten(0, 1)  # (n * Hkv, rep, t)
        out = out + torch.bmm(own_weights, self.value_buffer.flatten(0, 1)[:, :t]).view(n, heads, rep, Dh)
        return out.reshape(n, 1, Hq, Dh)
