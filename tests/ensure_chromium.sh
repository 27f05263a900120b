#!/usr/bin/env bash
# The HTML report test renders in Debian's headless Chromium: install it when it is missing.
command -v chromium >/dev/null 2>&1 && exit 0
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo -n"
echo "installing chromium for the report test (apt-get)..."
$SUDO apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null \
  || echo "warning: could not install chromium; the report rendering test will fail" >&2
