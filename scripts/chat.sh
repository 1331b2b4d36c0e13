#!/usr/bin/env bash
# Set up (if needed) and start the chat: builds the index on first use, then serves Chainlit.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
exec .venv/bin/supportbot chat "$@"
