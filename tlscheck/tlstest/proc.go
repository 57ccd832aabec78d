package tlstest

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// ProcView makes dir a view of the real /proc that shows only the TCP
// sockets on the given local ports: dir/net/tcp and dir/net/tcp6 hold
// the kernel's header and those sockets' lines, unchanged, and dir/PID
// links to /proc/PID for every process. Discovery run on it (tlscheck's
// procRoot, check-tls --proc-root) sees the real listeners of the
// services a test started, with their real owning processes, and nothing
// else on the machine.
func ProcView(dir string, ports ...int) error {
	if err := os.MkdirAll(filepath.Join(dir, "net"), 0o755); err != nil {
		return err
	}
	for _, name := range []string{"tcp", "tcp6"} {
		f, err := os.Open(filepath.Join("/proc/net", name))
		if err != nil {
			return err
		}
		var b strings.Builder
		sc := bufio.NewScanner(f)
		for n := 0; sc.Scan(); n++ {
			fields := strings.Fields(sc.Text())
			keep := n == 0
			if !keep && len(fields) > 1 {
				if _, hex, ok := strings.Cut(fields[1], ":"); ok {
					p, err := strconv.ParseUint(hex, 16, 16)
					keep = err == nil && slices.Contains(ports, int(p))
				}
			}
			if keep {
				b.WriteString(sc.Text() + "\n")
			}
		}
		err = sc.Err()
		f.Close()
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, "net", name), []byte(b.String()), 0o644); err != nil {
			return err
		}
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return err
	}
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		if err := os.Symlink(filepath.Join("/proc", e.Name()), filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

// SessionID returns the session ID of process pid, from /proc/PID/stat.
func SessionID(pid int) (int, error) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, err
	}
	// PID (COMM) STATE PPID PGRP SESSION …; COMM may hold spaces and ")".
	i := strings.LastIndexByte(string(b), ')')
	f := strings.Fields(string(b[i+1:]))
	if i < 0 || len(f) < 4 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	return strconv.Atoi(f[3])
}
