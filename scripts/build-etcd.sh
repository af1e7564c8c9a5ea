#!/usr/bin/env bash
# Builds etcd, etcdctl and etcdutl from the module in $1 (one of tools/etcd/v*)
# into $2, writing to a temporary directory first so that an interrupted
# build never leaves a partial set under the real name.
set -euo pipefail
src=$1
out=$2
tmp="$out.tmp.$$"
rm -rf "$tmp"
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT
( cd "$src" && GOFLAGS=-mod=readonly go build -trimpath -o "$tmp/" \
    go.etcd.io/etcd/server/v3 go.etcd.io/etcd/etcdctl/v3 go.etcd.io/etcd/etcdutl/v3 )
mv "$tmp/server" "$tmp/etcd"
# No pipe into head: under pipefail, head's early exit kills etcd with
# SIGPIPE (exit 141) and fails the build.
version=$("$tmp/etcd" --version)
echo "${version%%$'\n'*}"
rm -rf "$out"
mkdir -p "$(dirname "$out")"
mv "$tmp" "$out"
