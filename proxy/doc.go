// Package proxy is a fault-injecting TCP proxy for failure tests: it sits
// between clients and a server on loopback and adds latency and jitter,
// caps bandwidth, drops and resets connections, stalls reads to make slow
// consumers, and blackholes traffic. This machine's kernel has no netem, so
// this is how the project's tests make a bad network.
//
// Latency is a delay line: each chunk is stamped when it is read and
// written out when due, so added latency does not cap throughput, and
// chunks leave in the order they came, so jitter never reorders bytes.
// Faults change at runtime for every connection (SetFaults) or for one
// (SetConnFaults), from Go, over HTTP (Handler) or by Schedule.
//
// In Go tests:
//
//	p, err := proxy.New("127.0.0.1:0", gatewayAddr, proxy.Faults{Latency: 50 * time.Millisecond})
//	go p.Serve(ctx)
//	defer p.Close()
//	// dial p.Addr() instead of the gateway; later:
//	p.SetFaults(proxy.Faults{ResetAfter: time.Second})
//
// From the command line (spindle proxy -h lists every flag):
//
//	spindle proxy --listen 127.0.0.1:9001 --upstream 127.0.0.1:8000 \
//	    --latency 50ms --jitter 10ms --bandwidth 64KiB --control 127.0.0.1:9002
//	curl -s 127.0.0.1:9002/faults
//	curl -s -X PATCH -d '{"drop":0.1,"reset_after":"5s"}' 127.0.0.1:9002/faults
//	curl -s 127.0.0.1:9002/conns
//	curl -s -X PUT -d '{"stall_reads":true}' 127.0.0.1:9002/conns/3/faults
//	spindle proxy --listen 127.0.0.1:9001 --upstream 127.0.0.1:8000 --schedule flaky.sched
//
// where flaky.sched holds lines such as "at 10s blackhole" and "at 15s clear"
// (see Schedule). With --listen 127.0.0.1:0 the chosen address is printed on
// stdout as "listening on ADDR" (and "control on URL").
package proxy
