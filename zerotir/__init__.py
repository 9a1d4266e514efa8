"""zerotir: reinforcement learning that teaches a language model to write and run Python while solving math."""

__version__ = "0.1.0"
