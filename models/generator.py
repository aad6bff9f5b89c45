"""LLMGenerator: the policy that writes the five reasoning stages.

    from models.generator import LLMGenerator
    from reasoning.stages import get_stage

    generator = LLMGenerator("tiny", "cpu")          # or a hub id / local directory
    text = generator.generate_stage_output(problem="...", previous_stages=[], stage_id=1,
                                           prompt_template=get_stage(1).generator_prompt_template)

Sampling, log-probs, the SFT loss and checkpoints live in `models.base.CausalLMWrapper`.
"""

from __future__ import annotations

from models.base import CausalLMWrapper, Rollout
from reasoning.stages import build_prompt, get_stage

__all__ = ["LLMGenerator", "Rollout"]


class LLMGenerator(CausalLMWrapper):
    """A causal LM that completes one stage at a time, given the problem and the stages before it.

    Constructed like `CausalLMWrapper`: `LLMGenerator(model_name_or_path="tiny", device="cpu", dtype=None,
    use_lora=False, lora_r=16, lora_alpha=32, gradient_checkpointing=False, ...)`.
    """

    def stage_prompt(self, problem: str, previous_stages: list[str], stage_id: int, prompt_template: str | None = None) -> str:
        """The plain prompt for `stage_id` (what `sample` and `sft_loss` take)."""
        return build_prompt(problem, previous_stages, stage_id, template=prompt_template)

    def generate_stage_output(
        self,
        problem: str,
        previous_stages: list[str],
        stage_id: int,
        prompt_template: str | None = None,
        num_samples: int = 1,
        temperature: float = 0.7,
        max_new_tokens: int | None = None,
    ) -> str | list[str]:
        """The stage's text (cut at the next stage header; stage 5: the code): a str, or a list of `num_samples`.

        Greedy when temperature == 0. `max_new_tokens` defaults to the stage's budget.
        """
        stage = get_stage(stage_id)
        prompt = self.stage_prompt(problem, previous_stages, stage_id, prompt_template)
        rollout = self.sample(
            [prompt],
            num_samples=num_samples,
            max_new_tokens=max_new_tokens or stage.max_new_tokens,
            temperature=temperature,
        )
        outputs = [stage.extract(text) for text in rollout.texts]
        return outputs[0] if num_samples == 1 else outputs
