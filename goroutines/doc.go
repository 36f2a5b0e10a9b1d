// Package goroutines parses Go goroutine dumps and explains them.
//
// It reads every text form the Go runtime prints: panic and SIGQUIT
// tracebacks (GOTRACEBACK=single|all|system|crash), and the
// /debug/pprof/goroutine profile at ?debug=2 and ?debug=1. A [Parser] streams
// goroutines one at a time; an [Analyzer] folds them into groups of identical
// (or similar) stacks without keeping each goroutine; [Diff] compares two
// reports. Malformed lines are counted and skipped, never fatal.
package goroutines
