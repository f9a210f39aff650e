"""gptbook: a minimal GPT, built step by step in the book's notebooks."""

__version__ = "0.1.0"
