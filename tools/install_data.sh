#!/usr/bin/env bash
# Install the Debian data packages the experiments read (see DESIGN.md, Data). Idempotent.
# (The one pip data package, recbole for MovieLens-100K, is installed by the Makefile setup.)
set -euo pipefail
pkgs=(dataset-fashion-mnist bible-kjv python3-doc)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null; then
  echo "warning: no apt-get; data packages ${missing[*]} missing. Their tests will skip." >&2; exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then SUDO=sudo; else
    echo "Data packages missing: ${missing[*]}. Run as root:" >&2
    echo "  sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
    exit 0
  fi
else SUDO=""; fi
echo "installing Debian data packages: ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
