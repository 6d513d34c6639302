"""Modern language-model systems built from scratch, one literate notebook at a time: tokenizers, GPT, RDT, RQ-VAE retrieval, ToW SFT and DDP.

Modules:

- `rdtcourse.rqvae`: Turn every movie into a short tuple of codes, its semantic ID, so that similar movies share prefixes and a language model can later recommend a movie by writing its ID token by token."""

__version__ = "0.1.0"
