#!/bin/bash
# Before/after of one benchmark in one session: the tree at OLD (a commit) against this worktree's build,
# run alternately (old new old new ...), each run timed by /usr/bin/time (wall s, CPU s = user + sys,
# peak RSS MiB). CPU seconds move far less than wall time on a shared machine, so the summary gives
# both, and the load before each run.
#
#   bash scripts/bench-before-after.sh OLD PAIRS BENCH-ARGS...
#   bash scripts/bench-before-after.sh 54823fb^ 4 gptq 8 2 2
#
# OLD is exported with `git archive` into a temporary folder (no worktree is made), node_modules linked,
# built with build-wasm + tsc; this worktree must be built (npm run build) and is copied aside first, so
# rebuilding it during the runs does not mix the sides.
set -euo pipefail
old=$1 pairs=$2
shift 2
root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d /tmp/lowbit-before-after.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/old" "$tmp/new"
git -C "$root" archive "$old" | tar -x -C "$tmp/old"
ln -s "$(readlink -f "$root/node_modules")" "$tmp/old/node_modules"
(cd "$tmp/old" && node scripts/build-wasm.mjs >/dev/null && (npx tsc -p . >/dev/null 2>&1 || true))
[ -f "$tmp/old/dist/bench/run.js" ] || { echo "the old tree did not build" >&2; exit 2; }
cp -r "$root/dist" "$root/bin" "$root/package.json" "$tmp/new/"
ln -s "$(readlink -f "$root/node_modules")" "$tmp/new/node_modules"
echo "before: $(git -C "$root" rev-parse --short "$old")   after: $(git -C "$root" rev-parse --short HEAD) (this worktree's build)   bench: $*"
for i in $(seq 1 "$pairs"); do
  for side in old new; do
    load=$(cut -d' ' -f1-3 /proc/loadavg)
    line=$(cd "$tmp/$side" && /usr/bin/time -f "%e %U %S %M" node --experimental-wasm-relaxed-simd dist/bench/run.js "$@" 2>&1 >/dev/null | tail -1)
    read -r wall user sys rss <<<"$line"
    printf '%s run %d: wall %7.1f s  cpu %7.1f s  peak RSS %5d MiB  (load %s)\n' "$side" "$i" "$wall" "$(awk "BEGIN { print $user + $sys }")" "$((rss / 1024))" "$load" | tee -a "$tmp/runs"
  done
done
awk '{ w[$1] += $5; c[$1] += $8; r[$1] += $12; n[$1]++ }
  END { printf "mean: old wall %.1f s cpu %.1f s rss %.0f MiB; new wall %.1f s cpu %.1f s rss %.0f MiB; new/old wall %.3f cpu %.3f rss %.3f\n",
    w["old"]/n["old"], c["old"]/n["old"], r["old"]/n["old"], w["new"]/n["new"], c["new"]/n["new"], r["new"]/n["new"],
    w["new"]/w["old"], c["new"]/c["old"], r["new"]/r["old"] }' "$tmp/runs"
