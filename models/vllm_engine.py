"""The vLLM generation engine: `CausalLMWrapper.sample` through a colocated `vllm.LLM`.

    lm.generation_engine = "vllm"                  # UserError in one line when vLLM is not installed
    rollout = lm.sample(prompts, num_samples=G)    # as with the other engines

`VllmSampler` is what the wrapper builds for it, on first use:

    engine = VllmSampler(lm, gpu_memory_utilization=0.3, enforce_eager=False)
    completion_ids = engine.sample(prompt_ids, prompt_mask, num_samples=G, max_new_tokens=128,
                                   temperature=1.0, top_p=1.0, min_new_tokens=0)   # (B * G, C)

The engine runs in this process (VLLM_ENABLE_V1_MULTIPROCESSING=0), beside the
model being trained. It is built from the model's config and tokenizer alone,
written to a temporary directory, with dummy weights; the player's own weights
are then pushed in, and pushed again whenever they have changed since the last
push (`weights_version`), so every sample comes from the weights the optimizer
has just written. With LoRA the adapters are merged into the pushed weights,
under the base model's names; the trained model itself is never modified.

It samples what the other engines sample: softmax(logits / T) with top-p, no
top-k, min-p or penalties, EOS suppressed before `min_new_tokens`, stop at the
player's EOS ids, greedy at T == 0; and returns their layout: prompt-major,
right-padded with pad after a row's EOS, as many columns as the longest row.
Logits are computed in vLLM's kernels, so sampled tokens follow the same
distribution but not the same random stream, and greedy ties can break
differently under reduced precision.
"""

from __future__ import annotations

import copy
import os
import random
import tempfile
from contextlib import contextmanager

import torch
from torch import Tensor

from models.errors import UserError

INSTALL_HINT = "pip install -r requirements-vllm.txt on a GPU machine (docs/vllm.md)"


def vllm_installed() -> bool:
    """Whether vLLM can be found, without importing it (seconds)."""
    import importlib.util

    try:
        return importlib.util.find_spec("vllm") is not None
    except ValueError:  # sys.modules["vllm"] is None: imports of it are blocked
        return False


def require_vllm() -> None:
    """Import vLLM, or raise a one-line UserError that says how to install it."""
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")  # its INFO lines would swamp the CLIs' own
    try:
        import vllm  # noqa: F401
    except ImportError:
        raise UserError(f"generation_engine=vllm needs vLLM: {INSTALL_HINT}") from None
    except (OSError, RuntimeError, AttributeError) as e:  # installed, but against another torch or CUDA
        raise UserError(f"vLLM is installed but does not import ({_one_line(e)}); reinstall it: {INSTALL_HINT}") from None


def weights_version(model) -> tuple:
    """What changes whenever a parameter is written: its storage, in-place version counter and optimizer steps.

    Optimizer steps and `load_state_dict` write parameters in place, which bumps
    `_version`, except fused optimizers (`AdamW(fused=True)`), whose kernels leave
    it alone: a global optimizer hook counts every step on the parameters it
    updates as well. Moving or replacing a parameter changes its storage.
    Reading it costs one pass over the parameter list, not over the weights.
    """
    _count_optimizer_steps()
    return tuple((p.data_ptr(), p._version, getattr(p, "_optimizer_steps", 0)) for p in model.parameters())


_step_hook = None


def _count_optimizer_steps() -> None:
    global _step_hook
    if _step_hook is None:
        from torch.optim.optimizer import register_optimizer_step_post_hook

        def count(optimizer, args, kwargs):
            for group in optimizer.param_groups:
                for p in group["params"]:
                    p._optimizer_steps = getattr(p, "_optimizer_steps", 0) + 1

        _step_hook = register_optimizer_step_post_hook(count)


def merged_state_dict(base_model) -> dict[str, Tensor]:
    """The weights of `base_model` under their Hugging Face names; LoRA layers merged (W + scale * B @ A)."""
    from peft.tuners.lora import LoraLayer

    deltas = {}
    for name, module in base_model.named_modules():
        if isinstance(module, LoraLayer) and not module.merged:
            for adapter in module.active_adapters:
                if adapter in module.lora_A:
                    delta = module.get_delta_weight(adapter)
                    deltas[name] = delta if name not in deltas else deltas[name] + delta
    state = {}
    for key, tensor in base_model.state_dict().items():
        if ".lora_" in key:
            continue
        name = key.replace(".base_layer.", ".")
        module_name = name.rpartition(".")[0]
        if key.endswith(".base_layer.weight") and module_name in deltas:
            tensor = tensor + deltas[module_name].to(tensor.dtype)
        state[name] = tensor
    return state


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 200 else text[:197] + "..."


@contextmanager
def _kept_rng_state():
    """Building an engine seeds torch, numpy and random globally; the run's own streams must not move."""
    import numpy as np

    state = random.getstate(), np.random.get_state(), torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    try:
        yield
    finally:
        random.setstate(state[0])
        np.random.set_state(state[1])
        torch.set_rng_state(state[2])
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


class VllmSampler:
    """One `vllm.LLM` holding the latest weights of one player; see the module docstring."""

    def __init__(self, lm, gpu_memory_utilization: float = 0.3, enforce_eager: bool = False):
        """`lm` is the `CausalLMWrapper` whose model, tokenizer and EOS ids it samples with."""
        require_vllm()
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise UserError("generation_engine=vllm runs in one process; with torchrun use generation_engine=fast")
        self.lm = lm
        self.gpu_memory_utilization = float(gpu_memory_utilization)
        self.enforce_eager = bool(enforce_eager)
        self.llm = None
        self.pushes = 0  # how many times weights were pushed (tests read it)
        self._version = None
        self._dir = None

    def _build(self) -> None:
        # In-process, so that the weights can be handed over as tensors rather than serialized.
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        from vllm import LLM

        base = self.lm.base_model
        self._dir = tempfile.TemporaryDirectory(prefix="vllm-engine-")
        config = copy.deepcopy(base.config)
        config.architectures = [type(base).__name__]  # what vLLM picks its implementation by
        config.save_pretrained(self._dir.name)
        self.lm.tokenizer.save_pretrained(self._dir.name)
        dtype = self.lm.compute_dtype or self.lm.dtype  # what the other engines compute in
        seed = int(torch.randint(0, 2**31 - 1, (1,)))  # from the run's seed, without moving it further
        try:
            with _kept_rng_state():
                self.llm = LLM(
                    model=self._dir.name, load_format="dummy", dtype=dtype, seed=seed,
                    generation_config="vllm",  # the model's generation_config.json must not change the distribution
                    max_model_len=self.lm.max_length, gpu_memory_utilization=self.gpu_memory_utilization,
                    enforce_eager=self.enforce_eager, trust_remote_code=self.lm.trust_remote_code,
                    disable_log_stats=True,
                )
        except (ValueError, RuntimeError, OSError) as e:
            raise UserError(
                f"vLLM could not run {self.lm.model_name_or_path!r} ({_one_line(e)}); check vllm.gpu_memory_utilization, "
                "or sample with generation_engine=fast"
            ) from None

    def _sync_weights(self) -> None:
        """Push the player's weights when they changed since the last push (or were never pushed)."""
        version = weights_version(self.lm.model)
        if version == self._version:
            return
        base = self.lm.base_model
        state = merged_state_dict(base) if self.lm.use_lora else base.state_dict()
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": iter(state.items())})
        self.llm.reset_prefix_cache()  # cached prompt KV was computed by the old weights
        self._version = version
        self.pushes += 1

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
    ) -> Tensor:
        """Completion ids (B * G, C), prompt-major, for left-padded prompts (B, P); pad after each row's EOS."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        if self.llm is None:
            self._build()
        self._sync_weights()
        greedy = temperature == 0
        # Greedy samples of one prompt are all the same: draw one and repeat it.
        n = 1 if greedy else num_samples
        params = SamplingParams(
            n=n, temperature=0.0 if greedy else float(temperature), top_p=1.0 if greedy else float(top_p),
            max_tokens=max_new_tokens, min_tokens=min_new_tokens, stop_token_ids=list(self.lm.eos_token_ids),
            detokenize=False,
        )
        prompts = [TokensPrompt(prompt_token_ids=row[mask.bool()].tolist()) for row, mask in zip(prompt_ids.cpu(), prompt_mask.cpu())]
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        rows = []
        for output in outputs:  # in prompt order
            samples = [list(c.token_ids) for c in sorted(output.outputs, key=lambda c: c.index)]
            rows.extend(samples * num_samples if greedy else samples)
        C = max(len(r) for r in rows)
        completion_ids = torch.full((len(rows), C), self.lm.tokenizer.pad_token_id, dtype=torch.long)  # (N, C)
        for i, row in enumerate(rows):
            completion_ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        return completion_ids.to(prompt_ids.device)
