#!/usr/bin/env bash
# Vendors the browser code the web pages use (xterm.js and its fit add-on) into
# crates/forge-lifecycle/assets/vendor/, from the npm registry at the exact versions and
# integrity hashes of assets/vendor/package.json and package-lock.json. The forge binary serves
# these files itself (include_bytes!), so nothing is fetched at build or run time.
#
#   bash scripts/vendor-web.sh           # re-fetch and copy (after editing the pinned versions)
#   bash scripts/vendor-web.sh --check   # fail when the vendored files differ from the registry's
#
# Needs npm. After changing versions: `npm install --package-lock-only` in assets/vendor, run this
# script, and review the diff (the files are the packages' published builds, unmodified).
set -euo pipefail
cd "$(dirname "$0")/.."
vendor=crates/forge-lifecycle/assets/vendor
check=0
[[ ${1:-} == --check ]] && check=1
command -v npm >/dev/null || { echo "vendor-web: npm not found (apt-get install npm)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$vendor/package.json" "$vendor/package-lock.json" "$work/"
(cd "$work" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)

# source in node_modules -> vendored name
files=(
  "@xterm/xterm/lib/xterm.js:xterm/xterm.js"
  "@xterm/xterm/css/xterm.css:xterm/xterm.css"
  "@xterm/xterm/LICENSE:xterm/LICENSE"
  "@xterm/addon-fit/lib/addon-fit.js:xterm/addon-fit.js"
  "@xterm/addon-fit/LICENSE:xterm/LICENSE.addon-fit"
)
rc=0
for f in "${files[@]}"; do
  src="$work/node_modules/${f%%:*}"
  dst="$vendor/${f#*:}"
  if ((check)); then
    cmp -s "$src" "$dst" || { echo "vendor-web: $dst differs from ${f%%:*}" >&2; rc=1; }
  else
    mkdir -p "$(dirname "$dst")"
    cp "$src" "$dst"
  fi
done
((check)) && ((rc == 0)) && echo "vendor-web: the vendored files are the registry's"
exit "$rc"
