// Command nhscrypt-pprof is nhscrypt with profiling, for finding where a
// benchmark's time goes: it runs the same CLI and writes a CPU profile to
// $NHSCRYPT_CPUPROFILE, an allocation profile (at exit) to
// $NHSCRYPT_MEMPROFILE, a block profile to $NHSCRYPT_BLOCKPROFILE and an
// execution trace (go tool trace) to $NHSCRYPT_TRACE.
//
//	go build -o /tmp/nhscrypt-pprof ./bench/nhscrypt-pprof
//	NHSCRYPT_CPUPROFILE=cpu.out /tmp/nhscrypt-pprof backup run …
//	go tool pprof -top /tmp/nhscrypt-pprof cpu.out
package main

import (
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"runtime/trace"

	"github.com/nhscrypt/nhscrypt/internal/cli"
)

func main() {
	if p := os.Getenv("NHSCRYPT_CPUPROFILE"); p != "" {
		f, err := os.Create(p)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	if p := os.Getenv("NHSCRYPT_TRACE"); p != "" {
		f, err := os.Create(p)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		if err := trace.Start(f); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	if os.Getenv("NHSCRYPT_BLOCKPROFILE") != "" {
		runtime.SetBlockProfileRate(10000)
	}
	code := cli.Main()
	pprof.StopCPUProfile()
	trace.Stop()
	if p := os.Getenv("NHSCRYPT_MEMPROFILE"); p != "" {
		if f, err := os.Create(p); err == nil {
			pprof.Lookup("allocs").WriteTo(f, 0)
			f.Close()
		}
	}
	if p := os.Getenv("NHSCRYPT_BLOCKPROFILE"); p != "" {
		if f, err := os.Create(p); err == nil {
			pprof.Lookup("block").WriteTo(f, 0)
			f.Close()
		}
	}
	os.Exit(code)
}
