#!/usr/bin/env bash
# Installs Debian's Prometheus server and promtool for the Prometheus tests (no service is started:
# the tests run their own server on 127.0.0.1).
set -euo pipefail
if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "installing Debian's prometheus package (needs root) ..."
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
# The package may start its own service on a full system; the tests never use it.
command -v prometheus && command -v promtool
