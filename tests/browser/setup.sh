#!/usr/bin/env bash
# Installs what the real-browser test (tests/examples/test_ws_browser.py)
# needs on Debian: the system chromium, node and npm, and playwright-core from
# tests/browser/package-lock.json. Idempotent: nothing is downloaded when it
# is all there. Part of the README's test command.
set -euo pipefail
cd "$(dirname "$0")"
# Install only what is missing: a machine may already have node with its own
# npm (e.g. from nodesource), which Debian's npm package would conflict with.
packages=()
command -v chromium >/dev/null || packages+=(chromium)
command -v node >/dev/null || packages+=(nodejs)
command -v npm >/dev/null || packages+=(npm)
if [ ${#packages[@]} -gt 0 ]; then
    sudo=""
    if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
fi
# npm ci only when node_modules does not match the lockfile.
if ! cmp -s package-lock.json node_modules/.ci-lock; then
    npm ci --silent --no-audit --no-fund && cp package-lock.json node_modules/.ci-lock
fi
