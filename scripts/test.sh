#!/usr/bin/env bash
# Installs what the tests need into .venv, builds the release wheel, installs it (not editable)
# and runs every test: pytest, then cargo test.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# The same list as pyproject's `test` extra (kept here so the wheel is built only once).
.venv/bin/python -m pip install -q "maturin>=1.7,<2" numpy "pytest>=7" "tokenizers>=0.20" openai \
    "pyarrow>=14" "tqdm>=4.60" "ray[data]>=2.9" "schemathesis>=4.3,<5"

rm -rf dist
.venv/bin/maturin build --release -o dist
.venv/bin/python -m pip install -q --force-reinstall dist/candle_embed-*.whl

.venv/bin/python -m pytest -q -ra tests
# The PyO3 crate is only built by maturin (it links against the interpreter it runs in).
cargo test --release --workspace --exclude candle-embed-python
