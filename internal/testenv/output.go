package testenv

import (
	"bytes"
	"sync"
)

// Output collects a test server's standard output and error, safely for
// concurrent writes. It holds at most about 1 MiB: past that it keeps the
// first 8 KiB (the start-up banner, which can hold what a test needs, such
// as Vault's unseal key) and starts the rest again.
type Output struct {
	mu sync.Mutex
	b  bytes.Buffer
}

const (
	outputLimit = 1 << 20
	outputHead  = 8 << 10
)

func (o *Output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.b.Len() > outputLimit {
		o.b.Truncate(outputHead)
		o.b.WriteString("\n[… output dropped …]\n")
	}
	return o.b.Write(p)
}

// Bytes returns a copy of what was collected.
func (o *Output) Bytes() []byte {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]byte(nil), o.b.Bytes()...)
}

// String returns what was collected.
func (o *Output) String() string { return string(o.Bytes()) }

// Len returns the number of bytes collected.
func (o *Output) Len() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.Len()
}
