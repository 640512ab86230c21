#!/usr/bin/env bash
# Installs what the Redis channel tests (tests/channels/) need on Debian:
# the redis-server binary. The tests start their own redis-server on a free
# port in a temporary directory; the system service is never used, so it is
# stopped and disabled right after an install. Idempotent: nothing is
# downloaded when redis-server is already there. Part of the README's test
# command.
set -euo pipefail
if command -v redis-server >/dev/null || [ -x /usr/bin/redis-server ]; then
    exit 0
fi
sudo=""
if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends redis-server >/dev/null
# The package starts its own service on port 6379 where an init system runs;
# the tests do not want it (they start theirs), so stop it where it can be.
if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
    $sudo systemctl disable --now redis-server >/dev/null 2>&1 || true
fi
