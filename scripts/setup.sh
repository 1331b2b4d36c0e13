#!/usr/bin/env bash
# Create .venv at the repository root and install supportbot into it (idempotent).
# Sourced by scripts/chat.sh and scripts/test.sh; re-installs only when pyproject.toml changed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "Creating .venv with $("$PYTHON" --version)"
  "$PYTHON" -m venv .venv
fi

stamp=.venv/.supportbot-installed
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] || [ ! -x .venv/bin/supportbot ]; then
  echo "Installing supportbot and its dependencies into .venv (first time takes a few minutes)"
  .venv/bin/python -m pip install --quiet --upgrade pip
  # torch is pinned to its CPU build in pyproject.toml; installing it first keeps pip from
  # resolving a CUDA build for sentence-transformers.
  .venv/bin/python -m pip install --quiet "torch==2.13.0"
  .venv/bin/python -m pip install --quiet -e ".[dev]"
  echo "$want" > "$stamp"
fi
