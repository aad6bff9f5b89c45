"""What the generator and the discriminator share: one Hugging Face causal LM and its tokenizer.

`CausalLMWrapper` loads any causal LM by hub id or local directory ("tiny" is
built first by `models.tiny.resolve_model_path`, then loaded the same way), and
provides the tensor-level operations the RL loop needs:

    rollout = lm.sample(prompts, num_samples=G, max_new_tokens=128, temperature=1.0)
    per_token_logps = lm.per_token_logps(rollout.prompt_ids, rollout.prompt_mask,
                                         rollout.completion_ids, rollout.completion_mask)
    loss = lm.sft_loss(prompts, completions)           # warm-up
    ckpt = {**lm.checkpoint_info(), "model_state_dict": lm.model_state_dict()}
    lm2 = type(lm).from_checkpoint(ckpt, device="cpu")

Prompts passed to `sample` and `sft_loss` are plain texts (as
`reasoning.stages.build_prompt` returns them); the wrapper applies
`format_prompt` (the tokenizer's chat template, when it has one) itself.
"""

from __future__ import annotations

import copy
import inspect
import json
import logging
import re
import warnings
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import Tensor

from models.tiny import resolve_model_path
from models.errors import UserError

logger = logging.getLogger(__name__)

LORA_TARGET_MODULES = "all-linear"
# What `sample` runs: "fast", the lean decode loop of models.fast_sampler (models it
# cannot run exactly fall back to "generate", with a warning); "generate", model.generate;
# "vllm", a colocated vLLM engine that follows the weights (models.vllm_engine, GPU machines).
GENERATION_ENGINES = ("fast", "generate", "vllm")
LORA_DROPOUT = 0.0


@dataclass
class Rollout:
    """A batch of sampled completions, prompt-major: prompt i's samples are rows i*G .. i*G+G-1."""

    prompt_ids: Tensor  # (N, P) left-padded prompt tokens, N = len(prompts) * G
    prompt_mask: Tensor  # (N, P) 1 on prompt tokens, 0 on left padding
    completion_ids: Tensor  # (N, C) sampled tokens; pad after the first EOS
    completion_mask: Tensor  # (N, C) 1 up to and including the first EOS, then 0
    texts: list[str]  # N decoded completions, special tokens removed
    prompts: list[str]  # N plain prompt texts (before format_prompt), each repeated G times
    num_samples: int = 1  # G
    finished: Tensor | None = None  # (N,) True where the completion ended with EOS (False: ran out of tokens)

    def __len__(self) -> int:
        return len(self.texts)

    def rows(self, lo: int, hi: int) -> "Rollout":
        """Rows lo..hi-1, with the same G."""
        return Rollout(
            prompt_ids=self.prompt_ids[lo:hi], prompt_mask=self.prompt_mask[lo:hi],
            completion_ids=self.completion_ids[lo:hi], completion_mask=self.completion_mask[lo:hi],
            texts=self.texts[lo:hi], prompts=self.prompts[lo:hi], num_samples=self.num_samples,
            finished=self.finished[lo:hi] if self.finished is not None else None,
        )

    @classmethod
    def cat(cls, rollouts: list) -> "Rollout":
        """The rows of several rollouts of the same G, in order; prompts stay left-padded, completions right-padded.

        New padding is token 0 under a 0 mask: every vocabulary has it, and no
        computation reads a masked position.
        """
        if len(rollouts) == 1:
            return rollouts[0]
        if len({r.num_samples for r in rollouts}) != 1:
            raise ValueError(f"rollouts to join need one num_samples, got {[r.num_samples for r in rollouts]}")
        P = max(r.prompt_ids.size(1) for r in rollouts)
        C = max(r.completion_ids.size(1) for r in rollouts)

        def padded(tensors: list, width: int, left: bool) -> Tensor:
            out = []
            for t in tensors:
                pad = (width - t.size(1), 0) if left else (0, width - t.size(1))
                out.append(torch.nn.functional.pad(t, pad, value=0))
            return torch.cat(out)

        finished = [r.finished for r in rollouts]
        return cls(
            prompt_ids=padded([r.prompt_ids for r in rollouts], P, left=True),
            prompt_mask=padded([r.prompt_mask for r in rollouts], P, left=True),
            completion_ids=padded([r.completion_ids for r in rollouts], C, left=False),
            completion_mask=padded([r.completion_mask for r in rollouts], C, left=False),
            texts=[t for r in rollouts for t in r.texts],
            prompts=[p for r in rollouts for p in r.prompts],
            num_samples=rollouts[0].num_samples,
            finished=torch.cat(finished) if all(f is not None for f in finished) else None,
        )


class ReferenceModel:
    """A frozen reference policy for the KL term, callable like the model.

    A full copy of the weights, or, with LoRA, the trained model itself with its
    adapters switched off (no second copy). Always runs without gradients.
    With `offload`, the copy lives on CPU and visits `device` for each call.
    """

    def __init__(self, model, device: torch.device, adapters_disabled: bool = False, offload: bool = False):
        self.model = model
        self.device = device
        self.adapters_disabled = adapters_disabled
        self.offload = offload
        self.training = False

    def __call__(self, **inputs):
        adapters_off = self.model.disable_adapter() if self.adapters_disabled else nullcontext()
        with torch.no_grad(), adapters_off:
            if self.offload:
                self.model.to(self.device)
            try:
                return self.model(**inputs)
            finally:
                if self.offload:
                    self.model.to("cpu")


# --------------------------------------------------------------------------- device / dtype


def resolve_device(device) -> torch.device:
    name = str(device)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {name!r} was requested but CUDA is not available on this machine; use device cpu or auto")
    try:
        return torch.device(name)
    except RuntimeError:
        raise UserError(f"device must be cpu, cuda, cuda:N or auto, got {name!r}") from None


_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16,
}


def resolve_dtype(dtype) -> torch.dtype:
    """The dtype the weights are stored in. None or "auto": fp32 (see `compute_dtype`)."""
    if dtype is None or dtype == "auto":
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in _DTYPES:
        return _DTYPES[dtype]
    raise UserError(f"dtype must be auto, float32, bfloat16 or float16, got {dtype!r}")


def compute_dtype(dtype, device: torch.device) -> torch.dtype | None:
    """The dtype forward passes autocast to, or None for none.

    None or "auto" on CUDA is mixed precision: fp32 weights, optimizer state and
    gradients, bf16 matrix multiplies. Pure bf16 weights (`dtype=bfloat16`) halve
    the memory but AdamW then has no fp32 master copy, and small updates round
    away: on an H200 the tiny model's warm-up in pure bf16 ended at 2.5% held-out
    pass@1, against 14.2% with fp32 weights and bf16 autocast (docs/experiments.md). Explicit
    dtypes are used as they are.
    """
    if (dtype is None or dtype == "auto") and device.type == "cuda":
        return torch.bfloat16
    return None


# --------------------------------------------------------------------------- the wrapper


class CausalLMWrapper:
    """A causal LM plus tokenizer with sampling, log-probs, SFT loss and checkpoint helpers."""

    def __init__(
        self,
        model_name_or_path: str = "tiny",
        device="cpu",
        dtype=None,
        use_lora: bool = False,
        lora_r: int = 16,
        lora_alpha: int = 32,
        gradient_checkpointing: bool = False,
        trust_remote_code: bool = False,
        model_config: dict | None = None,
        generation_engine: str = "fast",
        vllm_options: dict | None = None,
    ):
        """Load `model_name_or_path` (hub id, local directory, or "tiny").

        `model_config` (a `config.to_dict()`) builds the architecture from the
        config with fresh weights instead of loading them: `from_checkpoint` uses
        it so that a full checkpoint never needs the base weights.
        `generation_engine` picks what `sample` runs (see `GENERATION_ENGINES`);
        it can be changed later through the attribute of the same name.
        `vllm_options` are `VllmSampler`'s keyword arguments (gpu_memory_utilization,
        enforce_eager), read when the vllm engine is first built.
        """
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model_name_or_path = model_name_or_path
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype)
        self.compute_dtype = compute_dtype(dtype, self.device)
        self.use_lora = use_lora
        self.lora_r = lora_r
        self.lora_alpha = lora_alpha
        self.gradient_checkpointing = gradient_checkpointing
        self.trust_remote_code = trust_remote_code
        self.vllm_options = dict(vllm_options or {})
        self._vllm_sampler = None
        self.generation_engine = generation_engine

        path = resolve_model_path(model_name_or_path)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
            if model_config is not None:
                config = _config_from_dict(model_config, path, trust_remote_code)
                model = AutoModelForCausalLM.from_config(config, dtype=self.dtype, trust_remote_code=trust_remote_code)
            else:
                model = AutoModelForCausalLM.from_pretrained(path, dtype=self.dtype, trust_remote_code=trust_remote_code)
        except (OSError, ValueError, KeyError) as e:
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(
                f"could not load model {model_name_or_path!r} ({reason[:200]}); "
                "give a local model directory or a hub id reachable from this machine"
            ) from None

        self.tokenizer.padding_side = "left"  # generation appends on the right
        if self.tokenizer.pad_token is None:
            if self.tokenizer.eos_token is None:
                raise UserError(f"the tokenizer of {model_name_or_path!r} has neither a pad nor an eos token; add one to its tokenizer_config.json")
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.eos_token_ids = self._eos_token_ids(model)

        model.to(self.device)
        if gradient_checkpointing:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        forward_params = inspect.signature(model.forward).parameters
        self._accepts_position_ids = "position_ids" in forward_params
        self._accepts_logits_to_keep = "logits_to_keep" in forward_params
        self.max_length = _max_positions(model.config)
        if use_lora:
            from peft import LoraConfig, get_peft_model

            lora = LoraConfig(
                r=lora_r, lora_alpha=lora_alpha, lora_dropout=LORA_DROPOUT,
                target_modules=LORA_TARGET_MODULES, task_type="CAUSAL_LM",
            )
            with warnings.catch_warnings():
                # peft 0.21 still asks for the deprecated `is_gradient_checkpointing`.
                warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
                model = get_peft_model(model, lora)
        self.model = model
        self._warned: set[str] = set()
        self._fast_sampler = None

    # ------------------------------------------------------------------ helpers

    @property
    def generation_engine(self) -> str:
        return self._generation_engine

    @generation_engine.setter
    def generation_engine(self, name: str) -> None:
        if name not in GENERATION_ENGINES:
            raise ValueError(f"generation_engine must be one of {', '.join(GENERATION_ENGINES)}, got {name!r}")
        if name == "vllm":
            from models.vllm_engine import require_vllm

            require_vllm()  # at the choice, not at the first sample: a run fails before it trains
        self._generation_engine = name

    def autocast(self):
        """The context every forward pass runs in: bf16 autocast under mixed precision, else nothing."""
        if self.compute_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.compute_dtype)

    @property
    def base_model(self):
        """The underlying `PreTrainedModel` (without the peft wrapper)."""
        return self.model.get_base_model() if self.use_lora else self.model

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        """The parameters an optimizer should update (LoRA adapters only, with LoRA)."""
        return [p for p in self.model.parameters() if p.requires_grad]

    def _eos_token_ids(self, model) -> list[int]:
        # Instruct models often end a turn with a token other than tokenizer.eos
        # (e.g. <|im_end|> and <|endoftext|>); generation_config lists them all.
        ids = []
        for source in (self.tokenizer.eos_token_id, getattr(model.generation_config, "eos_token_id", None)):
            for i in source if isinstance(source, (list, tuple)) else [source]:
                if i is not None and i not in ids:
                    ids.append(int(i))
        return ids

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            logger.warning(message)

    def format_prompt(self, text: str) -> str:
        """The text the model reads: the tokenizer's chat template around `text` when it has one, else `text`."""
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(
                [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
            )
        return text

    def _prompt_tokens(self, prompts: list[str], chat: bool = True) -> list[list[int]]:
        """Token ids of each formatted prompt, unpadded."""
        templated = chat and bool(getattr(self.tokenizer, "chat_template", None))
        texts = [self.format_prompt(p) for p in prompts] if chat else list(prompts)
        # A chat template already writes the BOS token as text; don't add a second one.
        return self.tokenizer(texts, add_special_tokens=not templated)["input_ids"]

    def _check_room(self, reserve: int) -> int | None:
        """How many prompt tokens fit beside `reserve` new ones (None: no limit)."""
        if self.max_length is None:
            return None
        keep = self.max_length - reserve
        if keep < 1:
            raise UserError(f"max_new_tokens={reserve} leaves no room for the prompt in the model's {self.max_length} positions; lower it")
        return keep

    def _left_pad(self, rows: list[list[int]]) -> tuple[Tensor, Tensor]:
        """(ids, mask), (B, L), every row right-aligned."""
        L = max(len(r) for r in rows)
        ids = torch.full((len(rows), L), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), L), dtype=torch.long)
        for i, row in enumerate(rows):
            if row:
                ids[i, L - len(row):] = torch.tensor(row)
                mask[i, L - len(row):] = 1
        return ids.to(self.device), mask.to(self.device)

    def _encode_prompts(self, prompts: list[str], reserve: int = 0, chat: bool = True) -> tuple[Tensor, Tensor]:
        """Left-padded (ids, mask) of the formatted prompts, cut on the left to leave `reserve` positions."""
        rows = self._prompt_tokens(prompts, chat)
        keep = self._check_room(reserve)
        if keep is not None and max(len(r) for r in rows) > keep:
            self._warn_once("truncate", f"prompts longer than {keep} tokens are cut on the left to fit {self.max_length} positions")
            rows = [r[-keep:] for r in rows]  # keep the end: it says which stage to write
        return self._left_pad(rows)

    def _generation_config(self, max_new_tokens: int, temperature: float, top_p: float, min_new_tokens: int):
        from transformers import GenerationConfig

        greedy = temperature == 0
        # Every sampling knob is set explicitly: unset ones would be filled from the
        # model's generation_config.json (often top_k=20, repetition_penalty=1.05),
        # and the RL update needs samples from exactly softmax(logits / T) (top-p aside).
        extra = {}
        if getattr(self.base_model.generation_config, "min_p", None) is not None:
            extra["min_p"] = 0.0
        return GenerationConfig(
            max_new_tokens=max_new_tokens,
            min_new_tokens=min_new_tokens or None,
            do_sample=not greedy,
            temperature=1.0 if greedy else float(temperature),
            top_p=1.0 if greedy else float(top_p),
            top_k=None if greedy else 0,  # 0: off (None would take the model's or the global 50)
            typical_p=1.0,
            repetition_penalty=1.0,
            no_repeat_ngram_size=0,
            num_beams=1,
            num_return_sequences=1,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self.eos_token_ids,
            use_cache=True,
            **extra,
        )

    # ------------------------------------------------------------------ sampling

    @torch.no_grad()
    def sample(
        self,
        prompts: list[str],
        num_samples: int = 1,
        max_new_tokens: int = 128,
        temperature: float = 1.0,
        top_p: float = 1.0,
        min_new_tokens: int = 0,
    ) -> Rollout:
        """Sample `num_samples` completions per prompt in one batch (greedy when temperature == 0)."""
        if not prompts or num_samples < 1:
            raise ValueError(f"sample needs at least one prompt and num_samples >= 1, got {len(prompts)} and {num_samples}")
        prompt_ids, prompt_mask = self._encode_prompts(prompts, reserve=max_new_tokens)  # (B, P)
        sampler = self._sampler()
        was_training = self.model.training
        self.model.eval()  # dropout off; and gradient checkpointing would turn the KV cache off
        try:
            if sampler is not None:
                completion_ids = sampler.sample(
                    prompt_ids, prompt_mask, num_samples=num_samples, max_new_tokens=max_new_tokens,
                    temperature=temperature, top_p=top_p, min_new_tokens=min_new_tokens,
                )  # (N, C)
            else:
                completion_ids = self._generate(prompt_ids.repeat_interleave(num_samples, dim=0),
                                                prompt_mask.repeat_interleave(num_samples, dim=0),
                                                max_new_tokens, temperature, top_p, min_new_tokens)  # (N, C)
        finally:
            self.model.train(was_training)
        prompt_ids = prompt_ids.repeat_interleave(num_samples, dim=0)  # (N, P), prompt-major
        prompt_mask = prompt_mask.repeat_interleave(num_samples, dim=0)
        completion_mask, finished = self._completion_mask(completion_ids)
        completion_ids = completion_ids.masked_fill(completion_mask == 0, self.tokenizer.pad_token_id)
        texts = self.tokenizer.batch_decode(completion_ids, skip_special_tokens=True)
        return Rollout(
            prompt_ids=prompt_ids,
            prompt_mask=prompt_mask,
            completion_ids=completion_ids,
            completion_mask=completion_mask,
            texts=texts,
            prompts=[p for p in prompts for _ in range(num_samples)],
            num_samples=num_samples,
            finished=finished,
        )

    def _generate(self, prompt_ids: Tensor, prompt_mask: Tensor, max_new_tokens: int, temperature: float,
                  top_p: float, min_new_tokens: int) -> Tensor:
        """Completion ids (N, C) from model.generate."""
        generation_config = self._generation_config(max_new_tokens, temperature, top_p, min_new_tokens)
        with self.autocast():
            sequences = self.model.generate(
                input_ids=prompt_ids, attention_mask=prompt_mask, generation_config=generation_config
            )  # (N, P + C)
        return sequences[:, prompt_ids.size(1):]

    def _sampler(self):
        """The vllm engine or the fast one when chosen (and, for fast, able to run this model), else None (generate)."""
        if self.generation_engine == "vllm":
            if self._vllm_sampler is None:
                from models.vllm_engine import VllmSampler

                self._vllm_sampler = VllmSampler(self, **self.vllm_options)
            return self._vllm_sampler
        if self.generation_engine != "fast":
            return None
        if self._fast_sampler is None or self._fast_sampler.model is not self.model:
            from models.fast_sampler import FastSampler

            self._fast_sampler = FastSampler(self.model, self.base_model, self.eos_token_ids,
                                             self.tokenizer.pad_token_id, autocast=self.autocast)
        reason = self._fast_sampler.unsupported_reason()
        if reason is not None:
            self._warn_once("fast_engine", f"the fast generation engine cannot run {self.model_name_or_path!r} "
                                           f"({reason}); sampling with model.generate instead")
            return None
        return self._fast_sampler

    def _completion_mask(self, completion_ids: Tensor) -> tuple[Tensor, Tensor]:
        """(mask, finished): mask is 1 up to and including the first EOS of each row."""
        is_eos = torch.isin(completion_ids, torch.tensor(self.eos_token_ids, device=completion_ids.device))  # (N, C)
        finished = is_eos.any(dim=1)  # (N,)
        C = completion_ids.size(1)
        first_eos = torch.where(finished, is_eos.int().argmax(dim=1), torch.full_like(finished, C, dtype=torch.long))
        positions = torch.arange(C, device=completion_ids.device).unsqueeze(0)  # (1, C)
        mask = (positions <= first_eos.unsqueeze(1)).long()  # (N, C)
        return mask, finished

    # ------------------------------------------------------------------ log-probs and losses

    def _forward(self, model, input_ids: Tensor, attention_mask: Tensor, logits_to_keep: int = 0):
        inputs = dict(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        if self._accepts_position_ids:
            # The same positions generate() used: counted from the first real token, so
            # left padding doesn't shift them.
            inputs["position_ids"] = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        if logits_to_keep and self._accepts_logits_to_keep:
            inputs["logits_to_keep"] = logits_to_keep
        with self.autocast():
            return model(**inputs)

    def per_token_logps(
        self,
        prompt_ids: Tensor,
        prompt_mask: Tensor,
        completion_ids: Tensor,
        completion_mask: Tensor,
        model=None,
        temperature: float = 1.0,
        with_entropy: bool = False,
        shared_prefix: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Log-probability of each completion token, (N, C); 0 where completion_mask is 0.

        One forward pass over prompt + completion; only the C positions that predict
        completion tokens go through the LM head. `model` defaults to `self.model`;
        pass a `make_reference_model()` result for the KL term. `temperature`
        divides the logits, matching samples drawn at that temperature.
        `with_entropy` also returns each position's entropy of that
        distribution, (N, C) without gradient, 0 where the mask is 0.
        `shared_prefix`: rows with the same prompt run it once, and their
        completions attend to its cache (models/shared_prefix.py); the same
        numbers to float rounding. Models it cannot run, and batches where no
        two rows share a prompt, take the one-pass path.
        """
        model = self.model if model is None else model
        logits = None
        if shared_prefix:
            logits = self._shared_prefix_logits(model, prompt_ids, prompt_mask, completion_ids, completion_mask)
        if logits is None:
            input_ids = torch.cat([prompt_ids, completion_ids], dim=1)  # (N, P + C)
            attention_mask = torch.cat([prompt_mask, completion_mask], dim=1)  # (N, P + C)
            logits = self._completion_logits(model, input_ids, attention_mask, completion_ids.size(1))
        per_token_logps, entropy = self._logps_from_logits(logits, completion_ids, temperature, with_entropy)
        per_token_logps = per_token_logps.masked_fill(completion_mask == 0, 0.0)
        if not with_entropy:
            return per_token_logps
        return per_token_logps, entropy.masked_fill(completion_mask == 0, 0.0)

    def _shared_prefix_logits(self, model, prompt_ids: Tensor, prompt_mask: Tensor, completion_ids: Tensor,
                              completion_mask: Tensor) -> Tensor | None:
        """`shared_prefix_logits` (N, C, V) where rows share prompts and the model allows it, else None."""
        from models.shared_prefix import distinct_prompts, shared_prefix_logits, unsupported_reason

        found = distinct_prompts(prompt_ids, prompt_mask)
        if found is None:  # every prompt is its own: one pass costs no more
            return None
        reference = isinstance(model, ReferenceModel)
        reason = "the reference model is offloaded to CPU between calls" if reference and model.offload else (
            unsupported_reason(model.model if reference else model))
        if reason is not None:
            self._warn_once("shared_prefix", f"shared-prefix log-probs cannot run {self.model_name_or_path!r} "
                                             f"({reason}); running each row's prompt instead")
            return None

        def run(**inputs):
            with self.autocast():
                return model(**inputs)

        logits = shared_prefix_logits(run, prompt_ids, prompt_mask, completion_ids, completion_mask, *found,
                                      logits_to_keep=self._accepts_logits_to_keep)
        if logits is None:
            self._warn_once("shared_prefix", f"{self.model_name_or_path!r} returned no usable cache; "
                                             "running each row's prompt instead")
        return logits

    def _completion_logits(self, model, input_ids: Tensor, attention_mask: Tensor, C: int) -> Tensor:
        """The logits (N, C, V) at the positions that predict the last C columns of `input_ids`, one forward pass."""
        logits = self._forward(model, input_ids, attention_mask, logits_to_keep=C + 1).logits
        return logits[:, -(C + 1):-1]  # (N, C, V): position t predicts target t

    def _token_logps(self, model, input_ids: Tensor, attention_mask: Tensor, targets: Tensor, temperature: float = 1.0,
                     with_entropy: bool = False):
        """(log-probs (N, C) of `targets`, the last C columns of `input_ids`; entropies (N, C) or None), one forward pass."""
        model = self.model if model is None else model
        logits = self._completion_logits(model, input_ids, attention_mask, targets.size(1))
        return self._logps_from_logits(logits, targets, temperature, with_entropy)

    @staticmethod
    def _logps_from_logits(logits: Tensor, targets: Tensor, temperature: float = 1.0, with_entropy: bool = False):
        """(log-probs (N, C) of `targets` under softmax(logits / T); entropies (N, C) without gradient, or None)."""
        # Row by row in float32: a (C, V) float32 slice at a time instead of (N, C, V).
        per_token_logps, entropies = [], []
        for row_logits, row_ids in zip(logits, targets):
            row_logits = row_logits.float()
            if temperature != 1.0:
                row_logits = row_logits / temperature
            row_logps = row_logits.log_softmax(dim=-1)  # (C, V)
            per_token_logps.append(row_logps.gather(-1, row_ids.unsqueeze(-1)).squeeze(-1))  # (C,)
            if with_entropy:
                with torch.no_grad():
                    entropies.append(-(row_logps.exp() * row_logps).sum(dim=-1))  # (C,)
        return torch.stack(per_token_logps), torch.stack(entropies) if with_entropy else None

    def _completion_tokens(self, completions: list[str]) -> list[list[int]]:
        """Token ids of each completion followed by EOS, tokenized apart from its prompt as sampling makes them."""
        eos = self.tokenizer.eos_token_id
        rows = [ids + [eos] for ids in self.tokenizer(list(completions), add_special_tokens=False)["input_ids"]]
        limit = self.max_length // 2 if self.max_length is not None else None
        if limit is not None and max(len(r) for r in rows) > limit:
            self._warn_once("truncate_completion", f"completions longer than {limit} tokens are cut")
            rows = [r[:limit] for r in rows]
        return rows

    def encode_completions(self, prompts: list[str], completions: list[str]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(prompt_ids, prompt_mask, completion_ids, completion_mask) as `sample` would return for these texts.

        Each completion ends with EOS; completions are right-padded.
        """
        rows = self._completion_tokens(completions)
        C = max(len(r) for r in rows)
        prompt_ids, prompt_mask = self._encode_prompts(prompts, reserve=C)  # (B, P)
        completion_ids = torch.full((len(rows), C), self.tokenizer.pad_token_id, dtype=torch.long)
        completion_mask = torch.zeros((len(rows), C), dtype=torch.long)
        for i, row in enumerate(rows):
            completion_ids[i, : len(row)] = torch.tensor(row)
            completion_mask[i, : len(row)] = 1
        return prompt_ids, prompt_mask, completion_ids.to(self.device), completion_mask.to(self.device)

    def sft_loss(self, prompts: list[str], completions: list[str]) -> Tensor:
        """Mean cross-entropy over completion tokens only (each completion followed by EOS)."""
        if len(prompts) != len(completions) or not prompts:
            raise ValueError(f"sft_loss needs as many completions as prompts (at least one), got {len(prompts)} and {len(completions)}")
        completion_rows = self._completion_tokens(completions)
        C = max(len(r) for r in completion_rows)
        keep = self._check_room(C)
        eos = self.tokenizer.eos_token_id
        rows, loss_mask = [], torch.zeros((len(prompts), C), device=self.device)  # (B, C)
        for i, (prompt, completion) in enumerate(zip(self._prompt_tokens(prompts), completion_rows)):
            prompt = (prompt or [eos])[-keep:] if keep is not None else (prompt or [eos])  # something to predict from
            rows.append(prompt + completion)
            loss_mask[i, C - len(completion):] = 1
        # Whole sequences right-aligned: a batch is as long as its longest prompt +
        # completion, not longest prompt + longest completion as in sample()'s layout.
        # Every completion then sits in the last C columns (behind prompt tokens where shorter).
        input_ids, attention_mask = self._left_pad(rows)  # (B, L)
        per_token_logps, _ = self._token_logps(self.model, input_ids, attention_mask, input_ids[:, -C:])  # (B, C)
        return -(per_token_logps * loss_mask).sum() / loss_mask.sum()

    # ------------------------------------------------------------------ reference model

    def make_reference_model(self, offload: bool = False, state_dict: dict | None = None) -> ReferenceModel:
        """A frozen copy of the current policy for the KL term (eval mode, no gradients).

        With LoRA the reference is the same model with its adapters disabled, so no
        copy is made. With `offload`, the copy is kept on CPU between calls.
        `state_dict` (whole tensors) builds the copy from the config and these
        weights instead of copying `self.model`: for a model that FSDP sharded.
        """
        if self.use_lora:
            return ReferenceModel(self.model, self.device, adapters_disabled=True)
        if state_dict is not None:
            from transformers import AutoModelForCausalLM

            reference = AutoModelForCausalLM.from_config(
                self.model.config, dtype=self.dtype, trust_remote_code=self.trust_remote_code
            )
            reference.load_state_dict(state_dict)
            reference.to(self.device)
        else:
            reference = copy.deepcopy(self.model)
        reference.eval()
        reference.requires_grad_(False)
        if self.gradient_checkpointing:
            reference.activation_checkpointing_disable()  # no backward through the reference
        if offload:
            reference.to("cpu")
        return ReferenceModel(reference, self.device, offload=offload)

    # ------------------------------------------------------------------ checkpoints

    def checkpoint_info(self) -> dict:
        """What `from_checkpoint` needs to rebuild this model without guessing (plain JSON types only)."""
        config = self.base_model.config
        return {
            "wrapper": type(self).__name__,
            "model_name_or_path": self.model_name_or_path,
            "architecture": type(self.base_model).__name__,
            "model_config": json.loads(config.to_json_string(use_diff=False)),
            "tokenizer": self.model_name_or_path,
            "use_lora": self.use_lora,
            "lora": (
                {"r": self.lora_r, "alpha": self.lora_alpha, "dropout": LORA_DROPOUT, "target_modules": LORA_TARGET_MODULES}
                if self.use_lora else None
            ),
        }

    def model_state_dict(self) -> dict[str, Tensor]:
        """The full model state, or only the LoRA adapters with LoRA."""
        return self._lm_state_dict()

    def _lm_state_dict(self) -> dict[str, Tensor]:
        if self.use_lora:
            from peft import get_peft_model_state_dict

            return get_peft_model_state_dict(self.model)
        return self.model.state_dict()

    def load_model_state(self, state_dict: dict[str, Tensor], checkpoint_info: dict | None = None) -> None:
        """Load `model_state_dict()` output; a different architecture raises UserError naming both."""
        expected = self._lm_state_dict()
        mismatch = set(state_dict) != set(expected) or any(
            tuple(state_dict[k].shape) != tuple(v.shape) for k, v in expected.items()
        )
        if mismatch:
            held = _describe(state_dict, checkpoint_info)
            here = _describe(expected, self.checkpoint_info())
            raise UserError(
                f"Model architecture mismatch: checkpoint holds {held} but the model is {here}; "
                "load it with the model it was trained with"
            )
        if self.use_lora:
            from peft import set_peft_model_state_dict

            set_peft_model_state_dict(self.model, state_dict)
        else:
            self.model.load_state_dict(state_dict)

    @classmethod
    def from_checkpoint(cls, ckpt: dict, device="cpu", dtype=None):
        """Rebuild from `{**checkpoint_info(), "model_state_dict": ...}` and load the weights.

        A full model is built from its stored config (no base weights are read);
        a LoRA model loads its base by name, then the adapters.
        """
        missing = [k for k in ("model_name_or_path", "model_config", "use_lora", "model_state_dict") if k not in ckpt]
        if missing:
            raise UserError(f"checkpoint lacks {', '.join(missing)}; it was not written by this project's models")
        lora = ckpt.get("lora") or {}
        wrapper = cls(
            ckpt["model_name_or_path"],
            device=device,
            dtype=dtype,
            use_lora=ckpt["use_lora"],
            lora_r=lora.get("r", 16),
            lora_alpha=lora.get("alpha", 32),
            model_config=None if ckpt["use_lora"] else ckpt["model_config"],
        )
        wrapper.load_model_state(ckpt["model_state_dict"], checkpoint_info=ckpt)
        return wrapper


def _config_from_dict(model_config: dict, path: str, trust_remote_code: bool):
    from transformers import AutoConfig
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    model_type = model_config.get("model_type")
    if model_type in CONFIG_MAPPING:
        return CONFIG_MAPPING[model_type].from_dict(model_config)
    # Remote-code architectures: their config class comes with the model's files.
    config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    config.update(model_config)
    return config


def _max_positions(config) -> int | None:
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    for name in ("max_position_embeddings", "n_positions"):
        value = getattr(text_config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


_LAYER_RE = re.compile(r"\.(?:layers|h|layer|blocks)\.(\d+)\.")


def _describe(state_dict: dict, info: dict | None) -> str:
    """A one-line summary of a model: from its info when known, else guessed from the tensors."""
    if info and info.get("model_config"):
        c = info["model_config"]
        hidden = c.get("hidden_size", c.get("n_embd"))
        layers = c.get("num_hidden_layers", c.get("n_layer"))
        lora = f", LoRA r={info['lora']['r']}" if info.get("use_lora") and info.get("lora") else ""
        return f"{info.get('architecture', '?')} (hidden {hidden}, {layers} layers, vocab {c.get('vocab_size')}{lora})"
    layers = {int(m.group(1)) for k in state_dict for m in [_LAYER_RE.search(k)] if m}
    embeddings = [v for k, v in state_dict.items() if ("embed" in k or "wte" in k) and getattr(v, "ndim", 0) == 2]
    shape = f", vocab {embeddings[0].shape[0]}, hidden {embeddings[0].shape[1]}" if embeddings else ""
    lora = " LoRA adapters" if any("lora_" in k for k in state_dict) else " weights"
    return f"{len(state_dict)}{lora} tensors ({len(layers)} layers{shape})"
