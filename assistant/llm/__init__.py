"""The on-device LLM: model directory, per-layer sessions, and the decode loop."""
