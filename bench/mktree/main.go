// Command mktree writes trees of files for the benchmarks.
//
//	mktree DIR N
//	    N small random files (0–8 KiB) in 50×7 folders, for
//	    bench/filecrypt.sh.
//	mktree -mode mixed [-mib 1024] [-files 20000] [-seed 1] DIR
//	    a mixed tree like a file server's, for bench/backup.sh: about MIB
//	    MiB in about FILES files. By bytes, about half is text (documents,
//	    CSV, logs: compressible, about 2.5:1 with zstd -3) and half random
//	    binary (scans, images, archives: incompressible). By count, 90% are
//	    small files (0–16 KiB), 9.75% medium (64–512 KiB, smaller when
//	    there are many files for the size) and 0.25% large (they fill the
//	    remaining bytes: 7 MiB each for 1 GiB in 20,000 files). A few files
//	    are empty. The same seed gives the same tree.
//	mktree -mode change [-pct 1] [-seed 2] DIR
//	    changes about PCT% of the regular files under DIR, chosen at
//	    random: a few bytes overwritten in place and a line appended, so
//	    size and mtime change (a real edit). Prints the count.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

func main() {
	mode := flag.String("mode", "small", "small, mixed or change")
	mib := flag.Int64("mib", 1024, "mixed: total size in MiB")
	files := flag.Int("files", 20000, "mixed: number of files")
	pct := flag.Float64("pct", 1, "change: percentage of files to change")
	seed := flag.Uint64("seed", 0, "random seed (0: 1 for mixed, 2 for change)")
	flag.Parse()
	args := flag.Args()
	var err error
	switch *mode {
	case "small":
		if len(args) != 2 {
			usage()
		}
		n, cerr := strconv.Atoi(args[1])
		if cerr != nil {
			fmt.Fprintln(os.Stderr, cerr)
			os.Exit(2)
		}
		err = small(args[0], n)
	case "mixed":
		if len(args) != 1 {
			usage()
		}
		err = mixed(args[0], *mib<<20, *files, newRand(*seed, 1))
	case "change":
		if len(args) != 1 {
			usage()
		}
		err = change(args[0], *pct/100, newRand(*seed, 2))
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "mktree:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: mktree DIR N | mktree -mode mixed [-mib M] [-files N] DIR | mktree -mode change [-pct P] DIR")
	os.Exit(2)
}

func newRand(seed, def uint64) *rand.Rand {
	if seed == 0 {
		seed = def
	}
	var s [32]byte
	for i := range 8 {
		s[i] = byte(seed >> (8 * i))
	}
	return rand.New(rand.NewChaCha8(s))
}

// small is the original mode: N random files of 0–8 KiB.
func small(dir string, n int) error {
	r := newRand(0, 1)
	buf := make([]byte, 8193)
	for i := 0; i < n; i++ {
		d := filepath.Join(dir, fmt.Sprintf("d%d", i%50), fmt.Sprintf("e%d", i%7))
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
		b := buf[:(i*7919)%8193]
		fillRandom(r, b)
		if err := os.WriteFile(filepath.Join(d, fmt.Sprintf("f%d", i)), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

func fillRandom(r *rand.Rand, b []byte) {
	i := 0
	for ; i+8 <= len(b); i += 8 {
		v := r.Uint64()
		for k := range 8 {
			b[i+k] = byte(v >> (8 * k))
		}
	}
	for ; i < len(b); i++ {
		b[i] = byte(r.Uint32())
	}
}

// textGen writes text from a fixed vocabulary with a skewed word
// distribution, which zstd compresses about as well as real documents.
type textGen struct {
	r     *rand.Rand
	vocab [][]byte
}

func newTextGen(r *rand.Rand) *textGen {
	t := &textGen{r: r}
	const letters = "etaoinshrdlcumwfgypbvkjxqz"
	for range 8192 {
		n := 2 + r.IntN(9)
		w := make([]byte, n)
		for i := range w {
			// Skewed letters, like English.
			x := r.Float64()
			w[i] = letters[int(x*x*float64(len(letters)))]
		}
		t.vocab = append(t.vocab, w)
	}
	return t
}

// fill fills b with lines of words; numbers now and then (CSV-ish).
func (t *textGen) fill(b []byte) {
	i, col := 0, 0
	for i < len(b) {
		var w []byte
		if t.r.IntN(12) == 0 {
			w = strconv.AppendInt(nil, int64(t.r.IntN(1000000)), 10)
		} else {
			x := t.r.Float64()
			w = t.vocab[int(x*x*x*float64(len(t.vocab)))]
		}
		i += copy(b[i:], w)
		col += len(w) + 1
		if i < len(b) {
			if col > 72 {
				b[i], col = '\n', 0
			} else {
				b[i] = ' '
			}
			i++
		}
	}
}

// mixed writes about total bytes in about n files.
func mixed(dir string, total int64, n int, r *rand.Rand) error {
	tg := newTextGen(r)
	nLarge := max(1, n/400)
	nMedium := n * 39 / 400
	nSmall := n - nLarge - nMedium
	type file struct {
		size int64
		text bool
	}
	var plan []file
	var used int64
	for i := range nSmall {
		f := file{size: int64(r.IntN(16 << 10)), text: r.IntN(10) < 7}
		if i%500 == 0 {
			f.size = 0
		}
		plan = append(plan, f)
		used += f.size
	}
	// Medium files average 288 KiB; with many files for the size, they
	// shrink so that small and medium files take at most 3/4 of it.
	scale := 1.0
	if room := float64(total*3/4 - used); float64(nMedium)*(288<<10) > room {
		scale = max(room, 0) / (float64(nMedium) * (288 << 10))
	}
	for range nMedium {
		f := file{size: int64(scale * float64(64<<10+r.IntN(448<<10))), text: r.IntN(2) == 0}
		plan = append(plan, f)
		used += f.size
	}
	// Large files take what is left, split evenly; text bytes so far are
	// topped up to about half of the total by the first large files.
	var textBytes int64
	for _, f := range plan {
		if f.text {
			textBytes += f.size
		}
	}
	left := max(total-used, int64(nLarge))
	for i := range nLarge {
		size := left / int64(nLarge-i)
		left -= size
		f := file{size: size, text: textBytes < total/2}
		if f.text {
			textBytes += size
		}
		plan = append(plan, f)
	}
	r.Shuffle(len(plan), func(i, j int) { plan[i], plan[j] = plan[j], plan[i] })
	buf := make([]byte, 1<<20)
	for i, f := range plan {
		// About 100 files a folder, three levels: dept/NN/MM.
		g := i / 100
		d := filepath.Join(dir, fmt.Sprintf("dept%02d", g%20), fmt.Sprintf("%02d", (g/20)%10), fmt.Sprintf("%03d", g/200))
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
		ext := ".bin"
		if f.text {
			ext = ".txt"
		}
		if err := writeFile(filepath.Join(d, fmt.Sprintf("file%06d%s", i, ext)), f.size, f.text, tg, r, buf); err != nil {
			return err
		}
	}
	return nil
}

func writeFile(p string, size int64, text bool, tg *textGen, r *rand.Rand, buf []byte) error {
	f, err := os.Create(p)
	if err != nil {
		return err
	}
	for size > 0 {
		b := buf[:min(int64(len(buf)), size)]
		if text {
			tg.fill(b)
		} else {
			fillRandom(r, b)
		}
		if _, err := f.Write(b); err != nil {
			f.Close()
			return err
		}
		size -= int64(len(b))
	}
	return f.Close()
}

// change edits about frac of the regular files under dir.
func change(dir string, frac float64, r *rand.Rand) error {
	var paths []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			paths = append(paths, p)
		}
		return nil
	})
	if err != nil {
		return err
	}
	want := int(float64(len(paths))*frac + 0.5)
	r.Shuffle(len(paths), func(i, j int) { paths[i], paths[j] = paths[j], paths[i] })
	now := time.Now()
	for _, p := range paths[:want] {
		f, err := os.OpenFile(p, os.O_RDWR, 0)
		if err != nil {
			return err
		}
		st, err := f.Stat()
		if err != nil {
			f.Close()
			return err
		}
		if st.Size() > 64 {
			patch := make([]byte, 64)
			fillRandom(r, patch)
			if _, err := f.WriteAt(patch, r.Int64N(st.Size()-64)); err != nil {
				f.Close()
				return err
			}
		}
		w := bufio.NewWriter(f)
		if _, err := f.Seek(0, 2); err != nil {
			f.Close()
			return err
		}
		fmt.Fprintf(w, "\nedited %s\n", now.Format(time.RFC3339Nano))
		if err := w.Flush(); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
		if err := os.Chtimes(p, now, now); err != nil {
			return err
		}
	}
	fmt.Println(want)
	return nil
}
