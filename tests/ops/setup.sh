#!/usr/bin/env bash
# Installs what the operations tests (tests/ops/) need on Debian: promtool,
# from Debian's prometheus package, to check and unit-test the alerting rules
# in config/. Idempotent: nothing is installed when promtool is there. Part of
# the README's test command.
set -euo pipefail
if ! command -v promtool >/dev/null; then
    sudo=""
    if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq
    # promtool ships in the server's package. On a host where systemd runs,
    # installing it also enables a prometheus service (port 9090); the tests
    # use only promtool.
    $sudo apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
