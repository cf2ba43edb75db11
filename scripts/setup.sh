#!/usr/bin/env bash
# Install everything the toolkit and its tests need into the current Python environment.
# Usage: bash scripts/setup.sh      (safe to run again; pip skips what is already there)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
$PY -m pip install --quiet torch==2.14.1 torchvision==0.29.1
$PY -m pip install --quiet -r requirements.txt
# visdom 0.2.4 is only an sdist and its setup.py imports pkg_resources, which setuptools>=81 dropped:
# pin setuptools in this environment and build visdom without build isolation.
$PY -m pip install --quiet 'setuptools<81' wheel
$PY -m pip install --quiet --no-build-isolation visdom==0.2.4
# pyRadPlan (the dose engine of --dose) without its declared dependencies: requirements.txt pins what its photon and
# proton dose path imports; the rest (pydantic_ai, huggingface_hub, their LLM and cloud clients) it never uses
$PY -m pip install --quiet --no-deps pyradplan==0.5.0
$PY -c "import torch, torchvision, visdom, dominate, nibabel, segment_anything; print('setup ok: torch', torch.__version__)"
$PY -c "from evaluation.dose.engine import check_engine; print('dose engine ok: pyRadPlan', check_engine())"
