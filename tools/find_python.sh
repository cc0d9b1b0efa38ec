#!/usr/bin/env bash
# Print the path of a Python >= 3.12, or explain how to get one and exit 1.
set -euo pipefail
ok() { "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' 2>/dev/null; }
candidates=(python3.12 python3.13 python3.14 python3)
for c in "${candidates[@]}"; do
  if p=$(command -v "$c" 2>/dev/null) && ok "$p"; then echo "$p"; exit 0; fi
done
# pyenv keeps versions that are installed but not selected; use them directly.
root=$( (command -v pyenv >/dev/null && pyenv root) || echo "${PYENV_ROOT:-$HOME/.pyenv}")
for p in "$root"/versions/3.1[2-9]*/bin/python3; do
  if [ -x "$p" ] && ok "$p"; then echo "$p"; exit 0; fi
done
echo "error: no Python >= 3.12 found (tried ${candidates[*]} and $root/versions)." >&2
echo "Install one, e.g. 'pyenv install 3.12' or 'apt-get install python3.12', then re-run." >&2
exit 1
