"""A lean sampling loop over a causal LM's own forward, for `CausalLMWrapper.sample`.

    engine = FastSampler(model, base_model, eos_token_ids=[2], pad_token_id=0)
    reason = engine.unsupported_reason()           # None: the loop can run this model
    completion_ids = engine.sample(prompt_ids, prompt_mask, num_samples=G, max_new_tokens=128,
                                   temperature=1.0, top_p=1.0, min_new_tokens=0)   # (B * G, C)

It draws from the same distribution as `model.generate` with the wrapper's
generation config (softmax(logits / T), top-p, EOS suppressed before
`min_new_tokens`, greedy at T == 0) and returns the same layout: one column per
decode step until every row has emitted an EOS or `max_new_tokens` is reached,
pad after a row's EOS. What it leaves out is what costs on small models:

- the KV cache is preallocated once per call (`PreallocatedLayer`) and grows by
  writing into it, instead of `torch.cat` of the whole cache at every step;
- each prompt is prefilled once; where the lean step runs in float32 its
  G samples attend to one copy of its cache (`SharedPrefixLayer`), else the
  cache is copied to each sample;
- a token is drawn by inverting the CDF with one uniform per row, instead of
  `torch.multinomial`, which draws one exponential per vocabulary entry;
- rows that have finished are dropped from the batch once enough of them have;
- no logits processors, stopping criteria or output bookkeeping beyond the above.

The model runs its own attention and mask code through transformers' `Cache`
interface, so any architecture whose cache is plain full-attention layers
works; `unsupported_reason` names what it refuses (sliding windows, linear
attention, encoder-decoders, remote code, generation defaults that change the
distribution), and the wrapper then falls back to `generate`.

After the prefill, the decode steps of a Qwen2 or Llama model run through
`models/lean_decode.py`, the same math without the per-step overhead of the
model's forward; any model it cannot vouch for decodes through its own forward
(`lean_reason` says why).
"""

from __future__ import annotations

import inspect
from contextlib import nullcontext

import torch
from torch import Tensor
from transformers import DynamicCache, GenerationConfig, PreTrainedModel
from transformers.cache_utils import DynamicLayer

from models.lean_decode import SharedPrefixLayer, filled_rows, lean_decoder

# Generation-config fields that never change which token is drawn, or that the
# wrapper's own generation config always sets; any other non-default field in a
# model's generation_config.json would be applied by `generate` and not here.
_NEUTRAL_GENERATION_FIELDS = {
    "bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id", "transformers_version",
    "_from_model_config", "max_length", "max_new_tokens", "min_length", "min_new_tokens", "do_sample",
    "temperature", "top_p", "top_k", "min_p", "typical_p", "repetition_penalty", "no_repeat_ngram_size",
    "num_beams", "num_return_sequences", "use_cache", "cache_implementation", "output_scores",
    "return_dict_in_generate", "output_attentions", "output_hidden_states", "output_logits",
}

# Drop finished rows once at most this share of the batch is still running:
# compaction copies the live part of the cache, so it pays only when it removes many rows.
_COMPACT_AT = 0.75



def cache_unsupported_reason(model, needed: tuple) -> str | None:
    """Why a loop over `model`'s own forward with a transformers `DynamicCache` may not be exact, or None.

    Shared by the fast sampler and the shared-prefix log-probs: a transformers
    model (not remote code, whose cache use is not known), decoder-only,
    whose forward takes the `needed` arguments, and whose cache is
    full-attention layers only.
    """
    if not isinstance(model, PreTrainedModel):
        return f"{type(model).__name__} is not a transformers model"
    module = type(model).__module__
    if not module.startswith("transformers."):
        return f"{type(model).__name__} comes from {module} (remote code), whose cache use is not known"
    config = model.config
    if getattr(config, "is_encoder_decoder", False):
        return f"{type(model).__name__} is an encoder-decoder"
    params = inspect.signature(model.forward).parameters
    missing = [p for p in needed if p not in params]
    if missing:
        return f"{type(model).__name__}.forward takes no {', '.join(missing)}"
    try:
        layers = DynamicCache(config=config).layers
    except (ValueError, TypeError, AttributeError, KeyError) as e:
        return f"its cache layout is not known ({type(e).__name__}: {e})"
    kinds = sorted({type(layer).__name__ for layer in layers if type(layer) is not DynamicLayer})
    if kinds:
        return f"its cache has {', '.join(kinds)} layers, not only full attention"
    return None

class PreallocatedLayer(DynamicLayer):
    """A `DynamicLayer` whose keys and values live in buffers allocated once, `rows` x `max_len` positions.

    `update` writes the new positions in place and returns views of the filled
    part, so the attention sees exactly what a `DynamicLayer` would hand it.
    """

    def __init__(self, rows: int, max_len: int):
        super().__init__()
        self.rows = rows
        self.max_len = max_len
        self.length = 0

    def lazy_initialization(self, key_states: Tensor, value_states: Tensor) -> None:
        self.dtype, self.device = key_states.dtype, key_states.device
        heads = key_states.shape[1]
        self.key_buffer = key_states.new_empty(self.rows, heads, self.max_len, key_states.shape[-1])  # (N, H, M, Dk)
        self.value_buffer = value_states.new_empty(self.rows, heads, self.max_len, value_states.shape[-1])  # (N, H, M, Dv)
        self.is_initialized = True

    def update(self, key_states: Tensor, value_states: Tensor, *args, **kwargs) -> tuple[Tensor, Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        start, stop = self.length, self.length + key_states.shape[-2]
        if stop > self.max_len:
            raise RuntimeError(f"the preallocated cache holds {self.max_len} positions, asked for {stop}")
        batch = key_states.shape[0]
        if batch != self.key_buffer.shape[0]:
            # Prefill of shared prompts: each of the `batch` prompts fills its G rows.
            if start != 0 or self.key_buffer.shape[0] % batch:
                raise RuntimeError(f"a cache of {self.key_buffer.shape[0]} rows cannot take {batch} rows at position {start}")
            G = self.key_buffer.shape[0] // batch
            for buffer, states in ((self.key_buffer, key_states), (self.value_buffer, value_states)):
                view = buffer.view(batch, G, *buffer.shape[1:])[:, :, :, start:stop]  # (B, G, H, T, D)
                view.copy_(states.unsqueeze(1))
            self._filled(stop)
            return key_states, value_states  # the prefill attends within its B prompts
        self.key_buffer[:, :, start:stop].copy_(key_states)
        self.value_buffer[:, :, start:stop].copy_(value_states)
        self._filled(stop)
        return self.keys, self.values

    def _filled(self, length: int) -> None:
        self.length = length
        self.keys = self.key_buffer[:, :, :length]  # (N, H, L, Dk) view
        self.values = self.value_buffer[:, :, :length]  # (N, H, L, Dv) view

    def get_seq_length(self) -> int:
        return self.length

    def select_rows(self, index: Tensor) -> None:
        """Keep only the rows `index` (in that order), copying just the filled positions."""
        self.key_buffer = filled_rows(self.key_buffer, index, self.length, dim=2)
        self.value_buffer = filled_rows(self.value_buffer, index, self.length, dim=2)
        self._filled(self.length)

    def reset(self) -> None:
        self.length = 0
        super().reset()


def sample_from_logits(logits: Tensor, temperature: float, top_p: float, generator: torch.Generator | None = None) -> Tensor:
    """One token per row of `logits` (N, V): argmax at temperature 0, else a draw from softmax(logits / T) cut to top-p.

    Top-p keeps the smallest set of most likely tokens whose mass reaches
    `top_p`, as transformers' TopPLogitsWarper does (ties at the cut kept the same way).
    """
    if temperature == 0:
        return logits.argmax(dim=-1)  # (N,)
    logits = logits / temperature
    if top_p < 1.0:
        sorted_logits, sorted_index = torch.sort(logits, descending=False)  # (N, V)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        remove = cumulative <= (1 - top_p)
        remove[:, -1] = False  # always keep the most likely token
        logits = logits.masked_fill(remove.scatter(1, sorted_index, remove), float("-inf"))
    probs = logits.softmax(dim=-1)  # (N, V)
    cdf = probs.cumsum(dim=-1)  # (N, V)
    total = cdf[:, -1:]  # (N, 1)
    u = torch.rand(total.shape, dtype=cdf.dtype, device=cdf.device, generator=generator) * total
    # u < total always: a token of probability 0 has the same CDF as the one before it and
    # is never the first entry above u, so masked tokens are never drawn.
    u = torch.minimum(u, torch.nextafter(total, torch.zeros_like(total)))
    return torch.searchsorted(cdf, u, right=True).squeeze(1)  # (N,)


class FastSampler:
    """The decode loop for one model; see the module docstring."""

    def __init__(self, model, base_model, eos_token_ids: list[int], pad_token_id: int, autocast=None, lean: bool = True,
                 share_prefixes: bool = True):
        """`model` is what runs the forward (a peft wrapper included); `base_model` the `PreTrainedModel` under it.

        `lean=False` decodes through the model's own forward even where the lean step could run;
        `share_prefixes=False` copies each prompt's cache to its samples even where they could share one.
        """
        self.model = model
        self.base_model = base_model
        self.eos_token_ids = list(eos_token_ids)
        self.pad_token_id = int(pad_token_id)
        self.autocast = autocast or nullcontext
        self._reason = self._find_unsupported_reason()
        params = inspect.signature(base_model.forward).parameters
        self._accepts_position_ids = "position_ids" in params
        self._accepts_logits_to_keep = "logits_to_keep" in params
        self.lean = lean
        self.share_prefixes = share_prefixes
        self.lean_steps = 0  # decode steps run by the lean step, over all calls
        self.shared_prefix_steps = 0  # of those, steps whose samples attended to one copy of their prompt

    def lean_reason(self) -> str | None:
        """Why decode steps would now run through the model's own forward, not the lean step, or None."""
        return lean_decoder(self.model, self.base_model)[1] if self.lean else "turned off (lean=False)"

    # ------------------------------------------------------------------ what it runs

    def unsupported_reason(self) -> str | None:
        """Why this engine cannot sample this model exactly as `generate` would, or None."""
        return self._reason

    def _find_unsupported_reason(self) -> str | None:
        model = self.base_model
        if not hasattr(model, "generate"):
            return f"{type(model).__name__} is not a transformers generative model"
        reason = cache_unsupported_reason(model, ("input_ids", "attention_mask", "past_key_values", "use_cache"))
        if reason is not None:
            return reason
        defaults = GenerationConfig().to_dict()
        changed = sorted(
            key for key, value in model.generation_config.to_dict().items()
            if key not in _NEUTRAL_GENERATION_FIELDS and key in defaults and value != defaults[key]
        )
        if changed:
            return f"its generation_config sets {', '.join(changed)}, which generate would apply"
        return None

    # ------------------------------------------------------------------ the loop

    def _make_cache(self, prompt_mask: Tensor, G: int, max_new_tokens: int, shared: bool):
        cache = DynamicCache(config=self.base_model.config)
        B, P = prompt_mask.shape
        cache.layers = [SharedPrefixLayer(prompt_mask, G, max_new_tokens) if shared
                        else PreallocatedLayer(B * G, P + max_new_tokens) for _ in cache.layers]
        return cache

    def _forward(self, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor, cache) -> Tensor:
        inputs = dict(input_ids=input_ids, attention_mask=attention_mask, past_key_values=cache, use_cache=True)
        if self._accepts_position_ids:
            inputs["position_ids"] = position_ids
        if self._accepts_logits_to_keep:
            inputs["logits_to_keep"] = 1
        with self.autocast():
            logits = self.model(**inputs).logits
        return logits[:, -1].float()  # (rows, V): float32 like generate's logits processors

    def _decode(self, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor, cache, lean) -> Tensor:
        if lean is None:
            return self._forward(input_ids, attention_mask, position_ids, cache)
        self.lean_steps += 1
        self.shared_prefix_steps += isinstance(cache.layers[0], SharedPrefixLayer)
        with self.autocast():
            logits = lean.step(input_ids, attention_mask, position_ids, cache)
        return logits.float()  # (rows, V)

    @torch.no_grad()
    def sample(
        self,
        prompt_ids: Tensor,
        prompt_mask: Tensor,
        num_samples: int = 1,
        max_new_tokens: int = 128,
        temperature: float = 1.0,
        top_p: float = 1.0,
        min_new_tokens: int = 0,
        on_step=None,
    ) -> Tensor:
        """Completion ids (B * G, C), prompt-major, for left-padded prompts (B, P); pad after each row's first EOS.

        `on_step(step, rows, logits)`, when given, sees the raw float32 logits (n, V)
        each step draws from and the output row (n,) of each of them.
        """
        if self._reason is not None:
            raise RuntimeError(f"the fast engine cannot run this model: {self._reason}")
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        B, P = prompt_ids.shape
        G = num_samples
        N = B * G
        device = prompt_ids.device
        prompt_mask = prompt_mask.long()
        # Positions as generate counts them: from each row's first real token (padding gets 1, and is masked).
        position_ids = (prompt_mask.cumsum(-1) - 1).masked_fill(prompt_mask == 0, 1)  # (B, P)
        lean = lean_decoder(self.model, self.base_model)[0] if self.lean else None  # None: the model's forward
        shared = self.share_prefixes and G > 1 and lean is not None and lean.shares_prefixes(self.autocast)
        cache = self._make_cache(prompt_mask, G, max_new_tokens, shared)
        eos = torch.tensor(self.eos_token_ids, dtype=torch.long, device=device)

        logits = self._forward(prompt_ids, prompt_mask, position_ids, cache)  # (B, V)
        if G > 1:
            logits = logits.repeat_interleave(G, dim=0)  # (N, V)
        # The mask grows by one column per step for every row, finished or not, as in generate.
        attention_mask = torch.cat([prompt_mask, prompt_mask.new_ones(B, max_new_tokens)], dim=1)  # (B, P + T)
        attention_mask = attention_mask.repeat_interleave(G, dim=0)  # (N, P + T)
        next_position = (position_ids[:, -1:] + 1).repeat_interleave(G, dim=0)  # (N, 1)

        out = torch.full((N, max_new_tokens), self.pad_token_id, dtype=torch.long, device=device)  # (N, T)
        rows = torch.arange(N, device=device)  # (n,) the output row of each batch row
        running = torch.ones(N, dtype=torch.bool, device=device)  # (n,) no EOS yet
        steps = 0
        for step in range(max_new_tokens):
            if on_step is not None:
                on_step(step, rows, logits)
            if step < min_new_tokens and len(self.eos_token_ids):
                logits = logits.index_fill(1, eos, float("-inf"))
            tokens = sample_from_logits(logits, temperature, top_p)  # (n,)
            # Finished rows that are still in the batch emit pad, as in generate.
            tokens = torch.where(running, tokens, self.pad_token_id)
            out[rows, step] = tokens
            steps = step + 1
            running = running & ~torch.isin(tokens, eos)
            n_running = int(running.sum())
            if n_running == 0 or steps == max_new_tokens:
                break
            if n_running <= _COMPACT_AT * len(rows):
                keep = running.nonzero().squeeze(1)  # (n_running,)
                for layer in cache.layers:
                    layer.select_rows(keep)
                rows, tokens, running = rows[keep], tokens[keep], running[keep]
                attention_mask, next_position = attention_mask[keep], next_position[keep]
            logits = self._decode(tokens.unsqueeze(1), attention_mask[:, : P + step + 1], next_position, cache, lean)
            next_position = next_position + 1
        return out[:, :steps]
