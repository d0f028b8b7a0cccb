#!/usr/bin/env bash
# clang-format over the native sources (the npm clang-format package ships the binary).
# --check: report differences without writing.
set -euo pipefail
cd "$(dirname "$0")/.."
files=$(git ls-files 'native/*.h' 'native/*.cc' 'native/*.cu' 'native/*.cuh')
bin=node_modules/.bin/clang-format
if [ "${1:-}" = "--check" ]; then
  $bin --dry-run --Werror $files
else
  $bin -i $files
fi
