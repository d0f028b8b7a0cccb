#!/usr/bin/env bash
# Packs every built TS dist (native, packages/*, apps/*) into .dists.tar (git-ignored via
# .git/info/exclude), so a device call carries one path for all of them: carry [".device",
# ".dists.tar"] and start the command with `tar -xf .dists.tar`.
set -euo pipefail
cd "$(dirname "$0")/.."
tar -cf .dists.tar native/dist packages/*/dist apps/*/dist
ls -la .dists.tar
