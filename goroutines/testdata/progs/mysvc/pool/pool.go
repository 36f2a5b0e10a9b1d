// Package pool starts workers that wait for jobs nobody sends.
package pool

// Start starts n workers.
func Start(n int) {
	jobs := make(chan int)
	for i := 0; i < n; i++ {
		go worker(jobs)
	}
}

func worker(jobs chan int) {
	for j := range jobs {
		_ = j
	}
}
