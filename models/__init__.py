"""The two players and the embedded default model.

    from models import LLMGenerator, LLMDiscriminator, Rollout, resolve_model_path

Imported lazily, so that `python -m models.tiny` and light users of
`models.tiny` don't pay for importing transformers.
"""

_EXPORTS = {
    "LLMGenerator": "models.generator",
    "LLMDiscriminator": "models.discriminator",
    "Rollout": "models.base",
    "CausalLMWrapper": "models.base",
    "resolve_model_path": "models.tiny",
}

__all__ = list(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'models' has no attribute {name!r}")
