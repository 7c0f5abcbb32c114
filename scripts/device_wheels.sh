#!/usr/bin/env bash
# Fetch, into .whl/ (git-ignored), the wheels the GPU machine's image lacks for the measurement
# core: its Python is 3.12 and nothing can be installed from the network there. The versions are
# the ones constraints-dev.txt's environment resolved here.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl \
  pydantic==2.14.3 pydantic-core==2.50.4 annotated-types==0.8.0 typing-inspection==0.4.5 \
  typing-extensions==4.16.0 mlcommons-loadgen==6.0.17
ls -la .whl
