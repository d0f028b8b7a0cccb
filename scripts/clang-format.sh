#!/usr/bin/env bash
# clang-format over the native sources (the npm clang-format package ships the binary).
#   bash scripts/clang-format.sh [--check] [FILE ...]
# --check: report differences without writing. FILEs: only those (agents working side by side
# format their own files); default: every tracked native source.
set -euo pipefail
cd "$(dirname "$0")/.."
check=0
if [ "${1:-}" = "--check" ]; then
  check=1
  shift
fi
if [ $# -gt 0 ]; then
  files="$*"
else
  files=$(git ls-files 'native/*.h' 'native/*.cc' 'native/*.cu' 'native/*.cuh')
fi
bin=node_modules/.bin/clang-format
if [ "$check" = 1 ]; then
  $bin --dry-run --Werror $files
else
  $bin -i $files
fi
