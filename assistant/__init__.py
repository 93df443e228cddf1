"""An offline voice assistant for the AXERA AX630C / AX650N."""

__version__ = "0.1.0"
