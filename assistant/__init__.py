"""An offline voice assistant for the AXERA AX630C / AX650N.

The public API for skill authors: `skill`, `background`, `Range`, `Choices`, `SkillContext`, and
`StorageError` (what `SkillContext.database` raises, its message saying why in words).
"""

__all__ = ["Choices", "Range", "SkillContext", "StorageError", "background", "skill"]
__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    # Imported when first asked for: the `assistant` command imports this package before its own code,
    # which is what turns a Ctrl-C as it starts into a quiet exit.
    if name in __all__:
        from assistant.skills import sdk

        return getattr(sdk, name)
    raise AttributeError(f"module 'assistant' has no attribute {name!r}")
