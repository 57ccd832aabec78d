// Package local is the backup backend for a repository in a local folder
// (a path or file:// URL): objects are files, written to a temporary name,
// fsynced and renamed into place.
package local

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/nhscrypt/nhscrypt/backup"
	"github.com/nhscrypt/nhscrypt/internal/atomicfile"
)

// Backend is a repository in a local folder.
type Backend struct {
	dir string
}

// Open returns the backend for the repository folder dir (which need not
// exist yet: Create makes it).
func Open(dir string) *Backend {
	dir = strings.TrimPrefix(dir, "file://")
	return &Backend{dir: dir}
}

// Create makes the repository folder layout. It fails if a config already
// exists.
func (b *Backend) Create() error {
	if _, err := os.Stat(filepath.Join(b.dir, "config")); err == nil {
		return fmt.Errorf("%q already holds a repository: %w", b.dir, fs.ErrExist)
	}
	for _, d := range []backup.FileType{backup.SnapshotFile, backup.ManifestFile, backup.DataFile} {
		if err := os.MkdirAll(filepath.Join(b.dir, string(d)), 0o700); err != nil {
			return err
		}
	}
	return nil
}

// Location is the folder.
func (b *Backend) Location() string { return b.dir }

func (b *Backend) path(h backup.Handle) string {
	if h.Type == backup.ConfigFile {
		return filepath.Join(b.dir, "config")
	}
	if h.Type == backup.DataFile && len(h.Name) > 2 {
		return filepath.Join(b.dir, string(h.Type), h.Name[:2], h.Name)
	}
	return filepath.Join(b.dir, string(h.Type), h.Name)
}

func validName(h backup.Handle) error {
	if h.Type == backup.ConfigFile {
		return nil
	}
	if h.Name == "" || strings.ContainsAny(h.Name, "/\\") || h.Name == "." || h.Name == ".." {
		return fmt.Errorf("invalid object name %q", h.Name)
	}
	return nil
}

// Save writes the object atomically (temporary file, fsync, rename).
func (b *Backend) Save(ctx context.Context, h backup.Handle, size int64, r io.Reader) error {
	if err := validName(h); err != nil {
		return err
	}
	p := b.path(h)
	if h.Type != backup.ConfigFile {
		if st, err := os.Stat(p); err == nil && st.Size() == size {
			return nil // content-named: already stored
		}
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return mapErr(err)
	}
	f, err := atomicfile.Create(p, 0o600, true)
	if err != nil {
		return mapErr(err)
	}
	defer f.Abort()
	n, err := io.Copy(f, &ctxReader{ctx, r})
	if err != nil {
		return err
	}
	if size >= 0 && n != size {
		return fmt.Errorf("saving %s/%s: wrote %d bytes, expected %d", h.Type, h.Name, n, size)
	}
	return f.Commit()
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// Open opens the object for reading from offset.
func (b *Backend) Open(ctx context.Context, h backup.Handle, offset, length int64) (io.ReadCloser, error) {
	if err := validName(h); err != nil {
		return nil, err
	}
	f, err := os.Open(b.path(h))
	if err != nil {
		return nil, mapErr(err)
	}
	if offset > 0 {
		if _, err := f.Seek(offset, io.SeekStart); err != nil {
			f.Close()
			return nil, err
		}
	}
	if length > 0 {
		return struct {
			io.Reader
			io.Closer
		}{io.LimitReader(f, length), f}, nil
	}
	return f, nil
}

// Stat describes the object.
func (b *Backend) Stat(ctx context.Context, h backup.Handle) (backup.FileInfo, error) {
	if err := validName(h); err != nil {
		return backup.FileInfo{}, err
	}
	st, err := os.Stat(b.path(h))
	if err != nil {
		return backup.FileInfo{}, mapErr(err)
	}
	return backup.FileInfo{Name: h.Name, Size: st.Size(), ModTime: st.ModTime()}, nil
}

// List walks the objects of type t.
func (b *Backend) List(ctx context.Context, t backup.FileType, fn func(backup.FileInfo) error) error {
	root := filepath.Join(b.dir, string(t))
	if _, err := os.Stat(root); err != nil {
		return mapErr(err)
	}
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if d.IsDir() || atomicfile.IsTemp(d.Name()) {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		return fn(backup.FileInfo{Name: d.Name(), Size: info.Size(), ModTime: info.ModTime()})
	})
}

// Remove deletes the object.
func (b *Backend) Remove(ctx context.Context, h backup.Handle) error {
	if err := validName(h); err != nil {
		return err
	}
	return mapErr(os.Remove(b.path(h)))
}

// Close does nothing.
func (b *Backend) Close() error { return nil }

func mapErr(err error) error {
	if err != nil && errors.Is(err, fs.ErrNotExist) && !errors.Is(err, backup.ErrNotFound) {
		return fmt.Errorf("%w: %w", backup.ErrNotFound, err)
	}
	return err
}

// SpoolDir is the repository's tmp folder, on the same filesystem, so a
// finished object is renamed into place rather than copied.
func (b *Backend) SpoolDir() string { return filepath.Join(b.dir, "tmp") }

// SaveFile renames a synced spool file into place and syncs the folder.
func (b *Backend) SaveFile(ctx context.Context, h backup.Handle, path string) error {
	if err := validName(h); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	p := b.path(h)
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		return err
	}
	if err := os.Rename(path, p); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(p))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
