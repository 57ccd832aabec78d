// Package atomicfile writes files so that a reader never sees a half-written
// output: data goes to a temporary file in the destination folder, which is
// fsynced and then renamed over (or, without overwrite, linked to) the final
// name, and the folder is fsynced. A file that is aborted, or never
// committed, is removed and leaves nothing behind.
package atomicfile

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// TempPrefix starts the name of every temporary file this package makes, so
// that they can be recognised (and cleaned up) by name.
const TempPrefix = ".nhscrypt-tmp-"

// ErrExists is returned (wrapped in a *fs.PathError) when the final name
// already exists and overwrite was not allowed.
var ErrExists = fs.ErrExist

// ErrNotRegular is returned when the final name exists and is not a regular
// file: it is never replaced, even with overwrite.
var ErrNotRegular = errors.New("exists and is not a regular file; not replaced")

// File is a pending output. Write to it, then call Commit to publish it under
// its final name, or Abort to discard it. Abort after Commit is a no-op, so
// `defer f.Abort()` is always safe.
type File struct {
	*os.File
	final     string
	perm      fs.FileMode
	overwrite bool
	mtime     time.Time
	uid, gid  int
	done      bool
	finished  bool
}

// Create starts a pending output for final. Unless overwrite is true, it
// fails with an error wrapping fs.ErrExist when final already exists (and
// Commit checks again, atomically). The temporary file is created 0600; perm
// is applied at Commit.
func Create(final string, perm fs.FileMode, overwrite bool) (*File, error) {
	if st, err := os.Lstat(final); err == nil {
		if !overwrite {
			return nil, &fs.PathError{Op: "create", Path: final, Err: fs.ErrExist}
		}
		if !st.Mode().IsRegular() {
			// Renaming over a device, FIFO, symlink or folder would
			// replace it, not write to it.
			return nil, &fs.PathError{Op: "create", Path: final, Err: ErrNotRegular}
		}
	}
	dir, base := filepath.Split(final)
	if dir == "" {
		dir = "."
	}
	var rnd [6]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return nil, err
	}
	// Keep the temporary name within NAME_MAX even for long final names.
	if len(base) > 160 {
		base = base[:160]
	}
	tmp := filepath.Join(dir, TempPrefix+hex.EncodeToString(rnd[:])+"-"+base)
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("creating temporary file for %q: %w", final, err)
	}
	pending.Store(tmp, struct{}{})
	return &File{File: f, final: final, perm: perm, overwrite: overwrite, uid: -1, gid: -1}, nil
}

// pending holds the temporary files not yet committed or aborted.
var pending sync.Map

// RemovePending removes every temporary file of this process that was
// neither committed nor aborted. A command that must exit at once (a second
// interrupt, or one blocked in a read) calls it so as to leave nothing
// behind.
func RemovePending() {
	pending.Range(func(k, _ any) bool {
		os.Remove(k.(string))
		pending.Delete(k)
		return true
	})
}

// SetModTime makes Commit (or Finish) set the file's modification time.
func (f *File) SetModTime(t time.Time) { f.mtime = t }

// SetOwner makes Commit (or Finish) change the file's owner (as root only;
// -1 keeps one). The owner is set before the mode, as chown clears setuid
// and setgid bits.
func (f *File) SetOwner(uid, gid int) { f.uid, f.gid = uid, gid }

// Name returns the final name.
func (f *File) Name() string { return f.final }

// Commit syncs the data, applies mode, times and owner, and publishes the file
// under its final name. Without overwrite, it fails with an error wrapping
// fs.ErrExist if the final name appeared in the meantime, and removes the
// temporary file.
func (f *File) Commit() error {
	if err := f.Finish(true); err != nil {
		return err
	}
	if err := f.Publish(); err != nil {
		return err
	}
	return syncDir(filepath.Dir(f.final))
}

// Finish applies mode, owner and times and closes the temporary file,
// syncing it first when sync is true. A caller that finishes many files
// without sync must make their data durable (one syncfs(2) for the
// filesystem, say) before it calls Publish on any of them, so that no final
// name ever points at data that a crash could lose.
func (f *File) Finish(sync bool) error {
	if f.done || f.finished {
		return errors.New("atomicfile: finish of a finished file")
	}
	f.finished = true
	if err := f.finish(sync); err != nil {
		f.discardTemp()
		return err
	}
	return nil
}

// Publish renames a finished file to its final name (never replacing an
// existing one without overwrite). It does not sync the folder.
func (f *File) Publish() error {
	if f.done {
		return errors.New("atomicfile: publish of a finished file")
	}
	if !f.finished {
		if err := f.Finish(true); err != nil {
			return err
		}
	}
	tmp := f.File.Name()
	f.done = true
	pending.Delete(tmp)
	if err := publish(tmp, f.final, f.overwrite); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

func (f *File) discardTemp() {
	f.done = true
	f.File.Close()
	os.Remove(f.File.Name())
	pending.Delete(f.File.Name())
}

func (f *File) finish(sync bool) error {
	if (f.uid >= 0 || f.gid >= 0) && os.Geteuid() == 0 {
		if err := f.File.Chown(f.uid, f.gid); err != nil {
			f.File.Close()
			return err
		}
	}
	// After chown, which clears setuid and setgid bits.
	if err := f.File.Chmod(f.perm); err != nil {
		f.File.Close()
		return err
	}
	if sync {
		if err := f.File.Sync(); err != nil {
			f.File.Close()
			return fmt.Errorf("syncing %q: %w", f.final, err)
		}
	}
	if err := f.File.Close(); err != nil {
		return fmt.Errorf("closing %q: %w", f.final, err)
	}
	if !f.mtime.IsZero() {
		if err := os.Chtimes(f.File.Name(), f.mtime, f.mtime); err != nil {
			return err
		}
	}
	return nil
}

// publish moves tmp to final; without overwrite it never replaces an
// existing file, even one created after Create checked.
func publish(tmp, final string, overwrite bool) error {
	if overwrite {
		return os.Rename(tmp, final)
	}
	err := unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, final, unix.RENAME_NOREPLACE)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.EEXIST):
		return &fs.PathError{Op: "create", Path: final, Err: fs.ErrExist}
	case errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOSYS), errors.Is(err, unix.ENOTSUP):
		// The filesystem has no RENAME_NOREPLACE: a hard link is just as
		// atomic and fails if the name exists.
		if err := os.Link(tmp, final); err != nil {
			if errors.Is(err, fs.ErrExist) {
				return &fs.PathError{Op: "create", Path: final, Err: fs.ErrExist}
			}
			return err
		}
		return os.Remove(tmp)
	default:
		return &fs.PathError{Op: "rename", Path: final, Err: err}
	}
}

// Abort discards the pending output. It is a no-op after Commit, Publish or
// Abort.
func (f *File) Abort() {
	if f.done {
		return
	}
	f.discardTemp()
}

// WriteFile writes data to name atomically with the given permissions.
func WriteFile(name string, data []byte, perm fs.FileMode, overwrite bool) error {
	f, err := Create(name, perm, overwrite)
	if err != nil {
		return err
	}
	defer f.Abort()
	if _, err := f.Write(data); err != nil {
		return err
	}
	return f.Commit()
}

// IsTemp reports whether a file name (base name) is one of this package's
// temporary files.
func IsTemp(base string) bool { return strings.HasPrefix(base, TempPrefix) }

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("syncing directory %q: %w", dir, err)
	}
	return nil
}

// Umask returns the process umask, read from /proc without changing it
// (umask(2) would set it process-wide for a moment). Outputs are chmod'ed
// explicitly, so callers apply it by hand.
func Umask() fs.FileMode { return umask }

var umask = func() fs.FileMode {
	data, err := os.ReadFile("/proc/self/status")
	if err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if v, ok := strings.CutPrefix(line, "Umask:"); ok {
				if m, err := strconv.ParseUint(strings.TrimSpace(v), 8, 32); err == nil {
					return fs.FileMode(m)
				}
			}
		}
	}
	return 0o022
}()
