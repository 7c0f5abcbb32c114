#!/usr/bin/env bash
# Deploy benchmatch to the current kubectl context: generate the Ray auth token (once), check the
# copies kustomize needs are in sync, then `kubectl apply -k k8s/`. docs/kubernetes.md explains each step.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

token="$here/secrets/ray-auth-token"
if [[ ! -s "$token" ]]; then
  umask 077
  openssl rand -hex 32 | tr -d '\n' > "$token"
  echo "generated a new Ray auth token in $token (git ignores it)"
fi

# Stale copies of the dashboards, rules or Serve config would deploy something other than the repo.
"${PYTHON:-python3}" "$here/sync.py"

kubectl apply -k "$here"
echo "deployed. Watch: kubectl -n benchmatch get raycluster,rayjob,rayservice,pods"
