#!/usr/bin/env bash
# Runs every native Go fuzz target for FUZZTIME each (default 60s) and
# prints a table of executions. Seeds under each package's testdata/fuzz
# also run as ordinary tests in `make test`. A failing input is written by
# Go to testdata/fuzz/<Target>/ and this script exits non-zero.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime=${FUZZTIME:-60s}
targets=(
  internal/boltpage:FuzzScan
  internal/boltpage:FuzzStreamPages
  internal/etcdfmt:FuzzWALReader
  internal/etcdfmt:FuzzTrailerWriter
  verify:FuzzSnapFile
  backup:FuzzParseManifest
  backup:FuzzDecide
  backup:FuzzParseSegment
  pitr:FuzzRecords
  defrag:FuzzParseRule
  repo:FuzzParseURL
  inspect:FuzzGet
  inspect:FuzzRead
  inspect:FuzzWALRecord
  kube:FuzzDecode
  cmd/etcdkit:FuzzSchedulerConfig
)
summary=()
status=0
for t in "${targets[@]}"; do
  pkg=${t%%:*} fn=${t##*:}
  log=$(mktemp)
  echo "== $fn (./$pkg, $fuzztime)"
  # Minimizing each new input of a large seed (60s by default) would take
  # the whole run, and a deadline met mid-minimization fails it: bound
  # minimization by iterations instead.
  if go test -run '^$' -fuzz "^$fn\$" -fuzztime "$fuzztime" -fuzzminimizetime 50x "./$pkg" >"$log" 2>&1; then
    result=ok
  else
    result=FAILED status=1
    cat "$log"
  fi
  execs=$(grep -o 'execs: [0-9]*' "$log" | tail -n 1 | cut -d' ' -f2 || true)
  summary+=("$(printf '%-22s %-18s %12s  %s' "$fn" "$pkg" "${execs:-0}" "$result")")
  rm -f "$log"
done
printf '%-22s %-18s %12s  %s\n' target package execs result
printf '%s\n' "${summary[@]}"
exit $status
