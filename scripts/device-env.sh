# Sourced by the scripts/gpu-*.sh device scripts, from the repository root: the GPU machine has no
# Node (../shared/device), so put the carried one on PATH, unpack the carried node_modules, and
# unpack the built dists when they travel as .dists.tar (scripts/pack-dists.sh).
if ! command -v node >/dev/null; then
  mkdir -p /tmp/bin
  [ -x /tmp/bin/node ] || { xz -dc .device/node.xz >/tmp/bin/node && chmod +x /tmp/bin/node; }
  export PATH=/tmp/bin:$PATH
fi
[ -d node_modules/vitest ] || tar -xJf .device/node_modules.tar.xz
[ ! -f .dists.tar ] || tar -xf .dists.tar
