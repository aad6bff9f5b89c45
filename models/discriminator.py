"""LLMDiscriminator: judges stage outputs and writes unit tests.

    from models.discriminator import LLMDiscriminator

    discriminator = LLMDiscriminator("tiny", "cpu")
    p = discriminator.score(problem, previous_stages, stage_id, output)       # in [0, 1]
    logits = discriminator.score_batch(items, grad=True)                     # (B,) for BCE
    tests = discriminator.generate_tests(problem, "add", code=None, num_tests=4)

Two heads on one causal LM: a linear scoring head on the final hidden state of
the last token (the text ends with a fixed "### Verdict:" marker, so that
position has read the whole output), and the LM head itself as the test writer,
trained by policy gradient with `sample_tests` + `per_token_logps`.
"""

from __future__ import annotations

import math
import sys

import torch
from torch import Tensor, nn

from models.base import CausalLMWrapper, Rollout
from reasoning.stages import build_discriminator_prompt, build_test_prompt, merge_tests, writer_samples
from models.errors import UserError

__all__ = ["LLMDiscriminator", "Rollout"]

SCORE_HEAD_PREFIX = "score_head."
SCORE_HEAD_SEED = 0


class LLMDiscriminator(CausalLMWrapper):
    """A causal LM with a scoring head (reference-quality vs generated) and a test writer."""

    def __init__(self, *args, **kwargs):
        """The same arguments as `CausalLMWrapper` (and LLMGenerator); adds the scoring head."""
        super().__init__(*args, **kwargs)
        hidden_size = self.base_model.config.get_text_config().hidden_size
        # The head stays float32 whatever the LM's dtype: it is tiny and BCE wants the precision.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(SCORE_HEAD_SEED)
            self.score_head = nn.Linear(hidden_size, 1)
            nn.init.normal_(self.score_head.weight, std=1.0 / math.sqrt(hidden_size))
            nn.init.zeros_(self.score_head.bias)
        self.score_head.to(self.device)
        self.last_dropped_tests = 0
        self.last_disputed_tests = 0

    def trainable_parameters(self) -> list[nn.Parameter]:
        return super().trainable_parameters() + list(self.score_head.parameters())

    # ------------------------------------------------------------------ scoring

    def _backbone(self):
        # The transformer without its LM head (model.model, model.transformer, ...);
        # LoRA layers are patched into it in place, so adapters stay active.
        return self.base_model.base_model

    def score_batch(self, items: list[tuple[str, list[str], int, str]], grad: bool = False) -> Tensor:
        """Logits (B,) that each (problem, previous_stages, stage_id, output) is reference-quality.

        Apply sigmoid for probabilities. With grad=True the graph is kept for BCE training.
        """
        if not items:
            return torch.zeros(0, device=self.device)
        texts = [build_discriminator_prompt(problem, prev, stage_id, output) for problem, prev, stage_id, output in items]
        input_ids, attention_mask = self._encode_prompts(texts, chat=False)  # (B, T) left-padded
        with torch.enable_grad() if grad else torch.no_grad():
            inputs = dict(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
            if self._accepts_position_ids:
                inputs["position_ids"] = (attention_mask.cumsum(-1) - 1).clamp(min=0)
            with self.autocast():
                hidden = self._backbone()(**inputs).last_hidden_state  # (B, T, H)
            last = hidden[:, -1].float()  # (B, H): left padding puts every text's last token here
            logits = self.score_head(last).squeeze(-1)  # (B,)
        return logits

    def score(self, problem: str, previous_stages: list[str], stage_id: int, output: str) -> float:
        """Probability in [0, 1] that `output` is a reference-quality stage `stage_id`."""
        return torch.sigmoid(self.score_batch([(problem, previous_stages, stage_id, output)])).item()

    # ------------------------------------------------------------------ test writing

    def test_prompt(self, problem: str, entry_point: str, code: str | None = None) -> str:
        return build_test_prompt(problem, entry_point, code)

    def sample_tests(self, prompts: list[str], **sampling) -> Rollout:
        """Sample test-writer completions for `test_prompt` texts (for the policy gradient).

        The keywords and defaults are `sample`'s (num_samples=1, max_new_tokens=128,
        temperature=1.0, top_p=1.0): the test writer is the LM head, sampled as any text.
        """
        return self.sample(prompts, **sampling)

    def generate_tests(
        self,
        problem: str,
        entry_point: str,
        code: str | None = None,
        num_tests: int = 4,
        temperature: float = 0.7,
        max_new_tokens: int = 128,
        samples: int | None = None,
        agreement: bool = True,
    ) -> list[str]:
        """Up to `num_tests` distinct single-line asserts that call `entry_point`.

        The writer samples `samples` completions (default: `num_tests` when
        sampling, one when greedy) and their distinct tests are merged: a
        writer that stops after one or two asserts still yields `num_tests`
        when its samples differ. With `agreement`, a call the samples assert
        different results for keeps only a majority result, or is dropped
        (`merge_tests`). Malformed lines are dropped and counted in
        `self.last_dropped_tests`; tests the vote removed, in
        `self.last_disputed_tests`.
        """
        rollout = self.sample_tests([self.test_prompt(problem, entry_point, code)],
                                    num_samples=writer_samples(num_tests, temperature, samples),
                                    max_new_tokens=max_new_tokens, temperature=temperature)
        every, self.last_dropped_tests = merge_tests(rollout.texts, entry_point, sys.maxsize, agreement=False)
        kept = merge_tests(rollout.texts, entry_point, sys.maxsize)[0] if agreement else every
        self.last_disputed_tests = len(every) - len(kept)
        return kept[:num_tests]

    # ------------------------------------------------------------------ checkpoints

    def model_state_dict(self) -> dict[str, Tensor]:
        """The LM state (adapters only with LoRA) plus the scoring head under "score_head."."""
        state = dict(super().model_state_dict())
        for name, tensor in self.score_head.state_dict().items():
            state[SCORE_HEAD_PREFIX + name] = tensor
        return state

    def load_model_state(self, state_dict: dict[str, Tensor], checkpoint_info: dict | None = None) -> None:
        lm_state = {k: v for k, v in state_dict.items() if not k.startswith(SCORE_HEAD_PREFIX)}
        head_state = {k[len(SCORE_HEAD_PREFIX):]: v for k, v in state_dict.items() if k.startswith(SCORE_HEAD_PREFIX)}
        super().load_model_state(lm_state, checkpoint_info)  # raises on a different architecture
        if set(head_state) != set(self.score_head.state_dict()):
            raise UserError(
                "checkpoint holds no scoring head (score_head.* keys); load a discriminator checkpoint, not a generator's"
            )
        self.score_head.load_state_dict(head_state)
