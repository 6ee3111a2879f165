#!/bin/bash
# alternating generate --stats, main vs branch: PAIRS THREADS TYPES...
P=$1; T=$2; shift 2
B=/work/main/.cache/bench
for ty in "$@"; do
  m=$B/llama-synth-768x2816x12-s1234-$ty.gguf
  [ -n "$LOWBIT_SYNTH" ] && m=$B/llama-synth-2048x5632x22-s1234-$ty.gguf
  o=""; n=""
  for i in $(seq $P); do
    a=$(cd /work/main && node bin/lowbit.js generate $m --prompt "Once upon a time" -n 128 --temp 0 --threads $T --stats 2>&1 >/dev/null | grep -o '([0-9.]* tok/s)' | tail -1 | tr -d '(a-z/ )')
    b=$(cd /work/wt/decode && node bin/lowbit.js generate $m --prompt "Once upon a time" -n 128 --temp 0 --threads $T --stats 2>&1 >/dev/null | grep -o '([0-9.]* tok/s)' | tail -1 | tr -d '(a-z/ )')
    o="$o $a"; n="$n $b"
  done
  python3 -c "
import statistics as s
o=[float(x) for x in '$o'.split()]; n=[float(x) for x in '$n'.split()]
r=[b/a for a,b in zip(o,n)]
print('$ty', 'threads $T', 'main', o, 'branch', n, 'new/old median %.3f' % s.median(r), 'faster in %d/%d' % (sum(x>1 for x in r), len(r)))"
done
