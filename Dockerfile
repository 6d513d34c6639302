# syntax=docker/dockerfile:1
# rdtcourse on CPU: the README's set-up (PyTorch's CPU build, then `pip install -e ".[dev]"`); the default command runs the tests.
#
#   docker build -t rdtcourse .
#   docker run --rm --shm-size=1g rdtcourse                    # the test suite (pytest -n 2)
#   docker run --rm -it -p 8888:8888 rdtcourse rdtcourse lab --ip 0.0.0.0 --port 8888   # JupyterLab: open the printed URL with localhost
#   docker run --rm rdtcourse rdtcourse course --tier ci      # any other command replaces the tests
#
# --shm-size: Docker's default 64 MB /dev/shm is too small for Chromium and for torchrun's processes.
# GPUs: this image has no CUDA. Build a CUDA image instead (a CUDA base image, or this one with
# `--build-arg TORCH_INDEX=https://pypi.org/simple`: PyPI's Linux torch is a CUDA build that brings its own CUDA libraries)
# and run it with `docker run --gpus all ...` (the host needs the NVIDIA driver and the NVIDIA Container Toolkit).
# Training on several processes (e.g. one per GPU): torchrun --nproc_per_node N -m rdtcourse kr train

# bookworm: the Debian release the project's CI runs on
FROM python:3.11-slim-bookworm

# the index torch==2.13.0 comes from: PyTorch's CPU-only wheels (PyPI's torch for Linux is a multi-GB CUDA build)
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1

# Chromium for the site's browser tests (they skip without it); fonts so pages lay out as on a desktop (CJK: Korean text).
# Unpinned on purpose: Debian's security updates replace the old versions.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends chromium fonts-liberation fonts-dejavu-core fonts-noto-cjk \
    && rm -rf /var/lib/apt/lists/*

# an ordinary user (course, uid 1000): tests and notebooks write under /app (_runs/, runs/) and the home's caches
RUN useradd --create-home --uid 1000 course && install -d -o course -g course /app
USER 1000:1000
WORKDIR /app

# torch first, in its own layer: the largest download, and the pin keeps pip from swapping in another build
RUN python -m venv .venv && .venv/bin/pip install --index-url "$TORCH_INDEX" torch==2.13.0

# the dependencies, from the metadata alone, so a change in the code does not download them again
COPY --chown=course:course pyproject.toml README.md LICENSE ./
COPY --chown=course:course rdtcourse/__init__.py rdtcourse/
RUN .venv/bin/pip install torch==2.13.0 -e ".[dev]"

# the project; installing it again (no dependencies, seconds) records the whole package tree
COPY --chown=course:course . .
RUN .venv/bin/pip install --no-deps -e .

# .venv/bin first, as the README's `.venv/bin/...` commands; no Hugging Face downloads (the course works offline)
ENV PATH=/app/.venv/bin:$PATH \
    HF_HUB_OFFLINE=1

CMD ["pytest"]
