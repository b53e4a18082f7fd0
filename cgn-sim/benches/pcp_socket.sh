#!/bin/bash
# PCP socket load over loopback (BENCHMARKS.md, issue 14): starts DAEMON_DIR/cgn-sim on
# 127.0.0.1:PORT, runs LOAD_DIR/cgn-load against it (bounded: 3 M answers or 10 s), prints the
# daemon's CPU time per answered request and, with MODE strace or perf, its system calls.
# Build both with `cargo build --release -p cgn-sim --bins -j 2`; keep a copy of an older
# build's binaries in another folder to compare in the same run. Kills only the PIDs it starts.
# usage: pcp_socket.sh DAEMON_DIR LOAD_DIR PORT MODE [extra cgn-load args]
# MODE: plain | strace (strace -c -f the daemon) | perf (perf stat syscall tracepoints)
D=$1; L=$2; P=$3; M=$4; shift 4
$D/cgn-sim --dataplane none --inside 127.0.0.1 --port $P --pool 198.51.100.0/24 --quota 65535 --ctl /tmp/pcp-socket-l$P.sock >/tmp/pcp-socket-d$P.log 2>&1 &
pid=$!
sleep 0.5
if [ $M = strace ]; then strace -c -f -o /tmp/pcp-socket-strace$P.txt -p $pid & tpid=$!; sleep 0.5; fi
if [ $M = perf ]; then perf stat -e 'syscalls:sys_enter_recvfrom,syscalls:sys_enter_sendto,syscalls:sys_enter_recvmmsg,syscalls:sys_enter_sendmmsg,syscalls:sys_enter_epoll_wait' -p $pid -o /tmp/pcp-socket-perf$P.txt & tpid=$!; sleep 0.3; fi
read u0 s0 < <(awk '{print $14, $15}' /proc/$pid/stat)
$L/cgn-load --server 127.0.0.1:$P --requests 3000000 --duration 10 --window 256 --mappings 1000 "$@" | tee /tmp/pcp-socket-load$P.txt
read u1 s1 < <(awk '{print $14, $15}' /proc/$pid/stat)
if [ -n "$tpid" ]; then kill -INT $tpid; wait $tpid 2>/dev/null; fi
ans=$(awk '{print $2}' /tmp/pcp-socket-load$P.txt)
echo "daemon CPU: user $(( (u1-u0)*10 )) ms sys $(( (s1-s0)*10 )) ms; $(echo "scale=3; ($u1-$u0+$s1-$s0)*10000/$ans" | bc) µs per answer"
[ $M = strace ] && grep -E "calls|recv|send|epoll|total" /tmp/pcp-socket-strace$P.txt
[ $M = perf ] && grep -E "syscalls|elapsed" /tmp/pcp-socket-perf$P.txt
kill $pid; wait $pid 2>/dev/null
