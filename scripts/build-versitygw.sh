#!/usr/bin/env bash
# Builds versitygw VERSION into OUT-DIR/versitygw from the Go module proxy:
# into a temporary directory first, renamed into place when complete.
set -euo pipefail
version=$1 out=${2%/}
tmp=$(mktemp -d "$(dirname "$out")/.versitygw-build.XXXXXX" 2>/dev/null || { mkdir -p "$(dirname "$out")"; mktemp -d "$(dirname "$out")/.versitygw-build.XXXXXX"; })
trap 'rm -rf "$tmp"' EXIT
GOBIN="$tmp" GOFLAGS=-mod=mod go install "github.com/versity/versitygw/cmd/versitygw@$version"
mkdir -p "$out"
mv "$tmp/versitygw" "$out/versitygw.tmp"
mv "$out/versitygw.tmp" "$out/versitygw"
