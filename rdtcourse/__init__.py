"""Language-model systems from scratch, one notebook at a time: tokenizers, GPT, RDT, RQ-VAE, ToW, DDP."""

__version__ = "0.1.0"
