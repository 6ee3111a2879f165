#!/bin/bash
# md5 of generate stdout: ROOT MODEL THREADS N
cd "$1"; node bin/lowbit.js generate "$2" --prompt "Once upon a time" -n "$4" --temp 0 --threads "$3" 2>/dev/null | md5sum | cut -c1-8
