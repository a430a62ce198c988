#!/usr/bin/env bash
# Install the Debian packages the project runs beside Python: redis-server (the labeling service's queue),
# chromium (browser tests and report screenshots), g++/ninja for DeepSpeed's communication op, postgresql
# (the search engine's PostgreSQL contract tests), slurm-wlm and munge (tests/test_slurm.py runs the Slurm job
# script on a local Slurm, scripts/slurm-local.sh). Skips what is present; needs root (or sudo) only when
# something is missing.
set -euo pipefail
need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v g++ >/dev/null 2>&1 || need+=(g++)
command -v ninja >/dev/null 2>&1 || need+=(ninja-build)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
[[ -x /usr/sbin/slurmctld && -x /usr/sbin/slurmd ]] || need+=(slurm-wlm)
[[ -x /usr/sbin/munged ]] || need+=(munge)
if ((${#need[@]} == 0)); then
    exit 0
fi
SUDO=""
if [[ "$(id -u)" != 0 ]]; then SUDO="sudo"; fi
echo "system-deps: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
