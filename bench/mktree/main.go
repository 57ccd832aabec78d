// Command mktree writes a tree of N small random files (0–8 KiB) for
// bench/filecrypt.sh: mktree DIR N.
package main

import (
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: mktree DIR N")
		os.Exit(2)
	}
	n, err := strconv.Atoi(os.Args[2])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	buf := make([]byte, 8193)
	for i := 0; i < n; i++ {
		d := filepath.Join(os.Args[1], fmt.Sprintf("d%d", i%50), fmt.Sprintf("e%d", i%7))
		if err := os.MkdirAll(d, 0o755); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		b := buf[:(i*7919)%8193]
		rand.Read(b)
		if err := os.WriteFile(filepath.Join(d, fmt.Sprintf("f%d", i)), b, 0o644); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
}
