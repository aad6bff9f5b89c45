"""Completion logits with each distinct prompt run once: what `CausalLMWrapper.per_token_logps(shared_prefix=True)` uses.

    found = distinct_prompts(prompt_ids, prompt_mask)       # None: every row's prompt is its own
    reason = unsupported_reason(model)                       # None: the two-pass forward is exact here
    logits = shared_prefix_logits(run, prompt_ids, prompt_mask, completion_ids, completion_mask, *found)  # (N, C, V)

The rows of a GRPO rollout come in groups of G that share one prompt, and at
the code stage the prompt is about 90% of each row's tokens. The per-row
path runs prompt + completion for every row, so the prompt is computed G
times. Here each distinct prompt is run once (with gradient when grad is on)
into transformers' own `DynamicCache`; the cache is indexed out to the rows
that share it (the indexing carries the gradient of every row back to the
one prefix), and the completions run attending to it, with the full
attention mask and positions that go on from the prompt's. The last prompt
position predicts completion token 0; completion positions predict the rest.

Whatever the model's own attention and mask code do with a cache, they do
here, so any architecture whose cache is plain full-attention layers gives
the per-row logits to float rounding. `unsupported_reason` names what it
refuses (remote code, sliding-window or linear-attention caches, gradient
checkpointing in training mode, where transformers turns the cache off, DDP
and FSDP wrappers, which expect one forward per backward), and the wrapper
then runs the per-row path.
"""

from __future__ import annotations

import torch
from torch import Tensor
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from models.fast_sampler import cache_unsupported_reason


def distinct_prompts(prompt_ids: Tensor, prompt_mask: Tensor) -> tuple[Tensor, Tensor] | None:
    """(first row of each distinct prompt (B,), the prompt of each row (N,)), or None when no two rows share one.

    Rows are the same prompt when their masks and their ids under the mask
    agree: what sits under a 0 mask is never read.
    """
    N = prompt_ids.size(0)
    key = torch.cat([prompt_ids.masked_fill(prompt_mask == 0, 0), prompt_mask.to(prompt_ids.dtype)], dim=1)  # (N, 2P)
    _, inverse = torch.unique(key, dim=0, return_inverse=True)  # (N,)
    B = int(inverse.max()) + 1 if N else 0
    if B == N:
        return None
    rows = torch.arange(N, device=inverse.device)
    first = torch.full((B,), N, dtype=torch.long, device=inverse.device).scatter_reduce(0, inverse, rows, "amin")  # (B,)
    return first, inverse


def unsupported_reason(module) -> str | None:
    """Why the two-pass forward cannot run `module` (a transformers model, or a peft wrapper of one) exactly, or None."""
    from torch.nn.parallel import DistributedDataParallel

    if isinstance(module, DistributedDataParallel):
        return "it is wrapped in DistributedDataParallel, which expects one forward per backward"
    if _is_sharded(module):
        return "it is sharded by FSDP, which expects one forward per backward"
    base = module.get_base_model() if hasattr(module, "get_base_model") else module
    if _checkpointing(base) and base.training:
        return "gradient checkpointing is on, and transformers turns the cache off under it in training mode"
    return cache_unsupported_reason(base, ("attention_mask", "position_ids", "past_key_values", "use_cache"))


def _checkpointing(model) -> bool:
    if hasattr(type(model), "is_activation_checkpointing"):  # transformers 5 renamed is_gradient_checkpointing
        return bool(model.is_activation_checkpointing)
    return bool(getattr(model, "is_gradient_checkpointing", False))


def _is_sharded(module) -> bool:
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # a torch built without distributed support shards nothing
        return False
    return any(isinstance(m, FSDPModule) for m in module.modules())


def shared_prefix_logits(run, prompt_ids: Tensor, prompt_mask: Tensor, completion_ids: Tensor, completion_mask: Tensor,
                         first: Tensor, inverse: Tensor, logits_to_keep: bool = True) -> Tensor | None:
    """The logits (N, C, V) that predict each completion token, each distinct prompt run once; None if no cache came back.

    `run(**inputs)` calls the model (inside the wrapper's autocast); `first`
    and `inverse` are `distinct_prompts`' answer. `logits_to_keep`: the
    model's forward takes it (only the last prompt position needs the LM head).
    """
    P, C = prompt_ids.size(1), completion_ids.size(1)
    attention_mask = torch.cat([prompt_mask, completion_mask], dim=1)  # (N, P + C)
    # The positions of the per-row forward: counted from the first real token, so left padding doesn't shift them.
    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)  # (N, P + C)
    inputs = dict(input_ids=prompt_ids[first], attention_mask=prompt_mask[first], position_ids=position_ids[first, :P],
                  use_cache=True)
    if logits_to_keep:
        inputs["logits_to_keep"] = 1
    out = run(**inputs)
    cache = out.past_key_values
    usable = isinstance(cache, DynamicCache) and all(type(layer) is DynamicLayer for layer in cache.layers)
    if not usable or cache.get_seq_length() != P:
        return None
    first_logits = out.logits[:, -1:][inverse]  # (N, 1, V): the last prompt position predicts completion token 0
    if C == 1:
        return first_logits
    cache.batch_select_indices(inverse)  # (B, H, P, D) -> (N, H, P, D) per layer; the gradient flows back to the prefix
    # The last completion token predicts nothing that is scored, so it is not run.
    out = run(input_ids=completion_ids[:, :-1], attention_mask=attention_mask[:, :-1],
              position_ids=position_ids[:, P:-1], past_key_values=cache, use_cache=True)
    return torch.cat([first_logits, out.logits], dim=1)  # (N, C, V)
