#!/usr/bin/env bash
# Submit one pipeline stage to a running Ray cluster with the Ray CLI (one entrypoint per stage).
#   RAY_ADDRESS=http://HEAD:8265 RUN_ROOT=/shared/runs jobs/ray/submit.sh ppo configs/ppo/demo.yaml learner.lr=1e-6
# `rlhf submit STAGE ...` does the same from Python and follows the logs.
# RUN_ROOT must be a folder every node shares (NFS, a mounted bucket, a PVC).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
STAGE="${1:?usage: submit.sh STAGE [CONFIG] [key=value ...]}"; shift
: "${RAY_ADDRESS:?set RAY_ADDRESS to the job server, e.g. http://HEAD:8265}"
: "${RUN_ROOT:?set RUN_ROOT to a folder every node shares}"
case "$STAGE" in
    prepare)  cmd=(prepare) ;;
    sft)      cmd=(train sft) ;;
    rm)       cmd=(train rm) ;;
    dpo)      cmd=(train dpo) ;;
    ppo)      cmd=(train ppo) ;;
    generate) cmd=(generate) ;;
    eval)     cmd=(eval) ;;
    report)   cmd=(report) ;;
    *) echo "submit.sh: unknown stage '$STAGE'; one of prepare sft rm dpo ppo generate eval report" >&2; exit 2 ;;
esac
exec ray job submit --address "$RAY_ADDRESS" --runtime-env jobs/ray/runtime_env.yaml -- \
    python -m rlhf.cli "${cmd[@]}" "$@" "run.root=$RUN_ROOT"
