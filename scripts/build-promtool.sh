#!/usr/bin/env bash
# Builds promtool from the module in $1 (tools/promtool, which pins one
# Prometheus release) into $2/promtool: into a temporary directory first,
# renamed into place when complete.
set -euo pipefail
src=$1
out=${2%/}
tmp="$out.tmp.$$"
rm -rf "$tmp"
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT
( cd "$src" && GOFLAGS=-mod=readonly go build -trimpath -o "$tmp/promtool" github.com/prometheus/prometheus/cmd/promtool )
rm -rf "$out"
mkdir -p "$(dirname "$out")"
mv "$tmp" "$out"
