#!/bin/sh
# Make sure Debian's Chromium is at /usr/bin/chromium for the browser tests (Playwright drives it with
# executable_path; no browser is ever downloaded by Playwright). Idempotent and quiet: does nothing when
# it is already there, installs it with apt-get when run as root, and otherwise explains and exits 1.
set -eu

CHROMIUM=/usr/bin/chromium
if [ -x "$CHROMIUM" ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "ensure_chromium: $CHROMIUM is missing and installing it needs root: sudo apt-get install chromium" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure_chromium: $CHROMIUM is missing and this system has no apt-get; install Chromium there yourself" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends chromium >/dev/null
if [ ! -x "$CHROMIUM" ]; then
    echo "ensure_chromium: apt-get installed chromium but $CHROMIUM is still missing" >&2
    exit 1
fi
