"""The built-in skills, loaded from this folder by the registry (they use only the public API)."""
