#!/usr/bin/env bash
# The dashboard's browser tests drive Debian's chromium through Playwright (executable_path):
# install it when missing and we are root; otherwise say what to install, and fail.
set -euo pipefail
for name in chromium chromium-browser; do
    if command -v "$name" >/dev/null 2>&1; then
        exit 0
    fi
done
if [ "$(id -u)" -ne 0 ]; then
    echo "the dashboard tests need chromium: run 'sudo apt-get install chromium'" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# Another apt run (a parallel set-up) holds the lock: wait for it rather than fail.
apt-get -o DPkg::Lock::Timeout=600 update -qq
apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends chromium >/dev/null
command -v chromium >/dev/null
