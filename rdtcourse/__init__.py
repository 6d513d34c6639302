"""Modern language-model systems built from scratch, one literate notebook at a time: tokenizers, GPT, RDT, RQ-VAE retrieval, ToW SFT and DDP."""

__version__ = "0.1.0"
