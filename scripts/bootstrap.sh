#!/usr/bin/env bash
# Installs what the build and the tests need from Debian packages. Idempotent: installs only
# what is missing, and does nothing (no apt-get update) when everything is present.
set -euo pipefail
packages=(cmake ninja-build g++ ccache pkg-config libgtest-dev libgmock-dev nlohmann-json3-dev
          libfmt-dev libcli11-dev libpcre2-dev libbenchmark-dev
          chromium   # chromium: the chat page's headless-browser test (skipped without it)
          libopenmpi-dev openmpi-bin  # plan, ep: ranks (mpirun)
          librocksdb-dev  # fs: metadata on disk
          libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc  # fs: transport
          etcd-server  # fs: the transactional store across machines (tests start one)
          libfuse3-dev fuse3 fio  # fs: the FUSE mount; fio checks data through it
          libdnnl-dev libopenblas-dev)  # bench_gemm's baselines (optional for the build)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "bootstrap: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
