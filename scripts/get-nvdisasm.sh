#!/usr/bin/env bash
# Puts cuobjdump and nvdisasm (CUDA 12.4, from Debian trixie's non-free nvidia-cuda-toolkit) in
# tools/cuda-bin/ on this machine, which has nvcc 13 but no disassembler. nvdisasm 12.4 reads the
# sm_90a cubins nvcc 13 writes (HGMMA, WARPGROUP.DEPBAR, SYNCS.*), so SASS can be read here
# instead of spending a device call on it (docs/kernels.md, session 12). Needs root (apt) and the
# Debian mirror; installs nothing system-wide: the .deb is only unpacked.
#   bash scripts/get-nvdisasm.sh
#   nvcc -arch=sm_90a -cubin ... -o k.cubin && tools/cuda-bin/nvdisasm -c k.cubin | grep HGMMA
set -euo pipefail
cd "$(dirname "$0")/.."
dest=tools/cuda-bin
if [ -x "$dest/nvdisasm" ]; then
  echo "$dest/nvdisasm is there"
  exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work" /etc/apt/sources.list.d/gemma3-nonfree.sources' EXIT
cat >/etc/apt/sources.list.d/gemma3-nonfree.sources <<'EOF'
Types: deb
URIs: http://deb.debian.org/debian
Suites: trixie
Components: non-free
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
apt-get update -o Dir::Etc::sourcelist=/etc/apt/sources.list.d/gemma3-nonfree.sources \
  -o Dir::Etc::sourceparts=- -o APT::Get::List-Cleanup=0 >/dev/null
(cd "$work" && apt-get download nvidia-cuda-toolkit >/dev/null 2>&1)
dpkg-deb -x "$work"/nvidia-cuda-toolkit_*.deb "$work/x"
mkdir -p "$dest"
cp "$work/x/usr/bin/cuobjdump" "$work/x/usr/bin/nvdisasm" "$dest/"
"$dest/nvdisasm" --version | tail -1
