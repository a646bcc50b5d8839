#!/usr/bin/env bash
# Ring attention at P = 2 over shared memory, TCP over the loopback, and TCP
# over a throttled loopback (docs/SCALING.md, "A throttled link"). The
# throttle is a token bucket on the loopback of a private network namespace
# (unshare -n), so nothing outside this run is slowed. Needs root (unshare,
# tc), Open MPI, and a build with MPI in BUILD (default: build).
# Usage: scripts/ring_throttle.sh [T] [RATES...]   (default: 16384 2gbit 400mbit 100mbit)
set -euo pipefail
BUILD=${BUILD:-build}
T=${1:-16384}
shift || true
RATES=${*:-2gbit 400mbit 100mbit}
W=$(mktemp -d "${TMPDIR:-/tmp}/ring_throttle.XXXXXX")
trap 'rm -rf "$W"' EXIT
"$BUILD/tests/tools/st_tool" gen "$W/in.st" 12 q=F32:1,8,$T,64 k=F32:1,8,$T,64 v=F32:1,8,$T,64
MPI="mpirun --allow-run-as-root -np 2 $BUILD/attn ring $W/in.st $W/out.st --causal --threads 1 --stats"
say() { echo "== $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg): $*"; }
say "shared memory (vader)"
OMPI_MCA_btl=self,vader $MPI 2>&1 | grep '^ring'
say "TCP over the loopback"
OMPI_MCA_btl=self,tcp OMPI_MCA_btl_tcp_if_include=lo $MPI 2>&1 | grep '^ring'
for rate in $RATES; do
    say "TCP over a loopback throttled to $rate"
    unshare -n bash -c "ip link set lo up && tc qdisc add dev lo root tbf rate $rate burst 1mb latency 500ms &&
        OMPI_MCA_btl=self,tcp OMPI_MCA_btl_tcp_if_include=lo OMPI_MCA_oob_tcp_if_include=lo $MPI 2>&1 | grep '^ring'"
done
