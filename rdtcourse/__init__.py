"""Language-model systems from scratch, one notebook at a time: tokenizers, GPT, RDT, RQ-VAE, ToW, DDP.

Modules:

- `rdtcourse.rdt_sudoku`: On text, more passes of RDT's shared encoder tied one pass. On Sudoku, where a cell is only determined once other cells are filled, they pay, and the gate learns how many passes a puzzle needs."""

__version__ = "0.1.0"
