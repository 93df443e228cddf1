"""An offline voice assistant for the AXERA AX630C / AX650N.

The public API for skill authors: `skill`, `background`, `Range`, `Choices`, `SkillContext`, and
`StorageError` (what `SkillContext.database` raises, its message saying why in words).
"""

from assistant.skills.sdk import Choices, Range, SkillContext, StorageError, background, skill

__all__ = ["Choices", "Range", "SkillContext", "StorageError", "background", "skill"]
__version__ = "0.1.0"
