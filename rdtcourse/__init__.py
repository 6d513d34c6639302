"""rdtcourse: modern language-model systems built from scratch, one notebook at a time."""
__version__ = "0.1.0"
