#!/bin/bash
# Builds the Debian package from this checkout, the way a maintainer would:
# the tracked files (and new ones not yet committed, but nothing ignored, so no
# build products) are copied to OUT/changegate-VERSION, where
#   dpkg-buildpackage -us -uc -b
# runs (dh_auto_test runs the Check unit tests).
# Usage: tests/package/build-deb.sh OUT   -> OUT/changegate_VERSION_ARCH.deb
# Prints the .deb's path last. Exits non-zero if the build fails. Lintian's verdict is
# tests/package/test_package.py's to give.
set -euo pipefail
out=$(realpath -m "${1:?usage: build-deb.sh OUTDIR}")
cd "$(dirname "$0")/../.."
version=$(dpkg-parsechangelog -S Version)
src=$out/changegate-$version
rm -rf "$src"
mkdir -p "$src"
git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' f; do
  [ -e "$f" ] && printf '%s\0' "$f"
done | tar --null -T - -cf - | tar -xf - -C "$src"
cd "$src"
echo "build-deb: dpkg-buildpackage in $src"
DEB_BUILD_OPTIONS="parallel=$(nproc) ${DEB_BUILD_OPTIONS:-}" \
  dpkg-buildpackage -us -uc -b >"$out/build.log" 2>&1 || {
  tail -40 "$out/build.log"
  exit 1
}
cd "$out"
arch=$(dpkg --print-architecture)
deb=$out/changegate_${version}_${arch}.deb
[ -f "$deb" ] || { echo "build-deb: $deb was not built" >&2; exit 1; }
echo "$deb"
