#!/usr/bin/env bash
# Packs every built TS dist (native, packages/*, apps/*) into .dists.tar (git-ignored via
# .git/info/exclude), so a device call carries one path for all of them: carry [".device",
# ".dists.tar"] and start the command with `tar -xf .dists.tar`. It also carries .dists-commit,
# this checkout's commit (+ "-dirty"): the device copy's own git HEAD lags the tree it is given,
# so the device scripts label their results with this file instead.
set -euo pipefail
cd "$(dirname "$0")/.."
git describe --always --dirty >.dists-commit 2>/dev/null || echo unknown >.dists-commit
tar -cf .dists.tar .dists-commit native/dist packages/*/dist apps/*/dist
rm -f .dists-commit
ls -la .dists.tar
