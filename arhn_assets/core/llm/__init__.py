"""LLM backends behind one protocol (`base.LLMBackend`), and the persistent call cache."""
