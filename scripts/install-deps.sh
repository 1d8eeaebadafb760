#!/usr/bin/env bash
# Install the system packages afxdp-proxy needs on Debian 12, only when missing
# (systemd for systemd-analyze and util-linux for setpriv: the tests of the service unit;
# prometheus: the server the metrics test scrapes the proxy with).
set -euo pipefail
pkgs=(clang llvm libbpf-dev libxdp-dev bpftool iperf3 ethtool iproute2 libelf-dev zlib1g-dev
      pkg-config gcc make python3-venv python3-dev nftables systemd util-linux prometheus)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
	echo "installing: ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# bpffs is where bpftool and libbpf expect it; harmless when already mounted
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf || true
