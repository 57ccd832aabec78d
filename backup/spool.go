package backup

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"hash"
	"io"
	"os"
)

// FileSaver is implemented by backends that can take a finished spool file
// by renaming it (the local backend), saving a copy.
type FileSaver interface {
	// SpoolDir is a folder on the same filesystem as the repository.
	SpoolDir() string
	// SaveFile moves the synced file at path into place as h.
	SaveFile(ctx context.Context, h Handle, path string) error
}

// spool collects one encrypted object in a temporary file while hashing
// it, so its name (the SHA-256 of the ciphertext) is known before upload
// and memory stays bounded however large the object.
type spool struct {
	f    *os.File
	h    hash.Hash
	n    int64
	done bool
}

func newSpool(dir string) (*spool, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	f, err := os.CreateTemp(dir, ".nhscrypt-tmp-spool-")
	if err != nil {
		return nil, err
	}
	return &spool{f: f, h: sha256.New()}, nil
}

func (s *spool) Write(p []byte) (int, error) {
	n, err := s.f.Write(p)
	s.h.Write(p[:n])
	s.n += int64(n)
	return n, err
}

func (s *spool) name() string { return hex.EncodeToString(s.h.Sum(nil)) }

// store saves the spool as an object of type t named by its hash.
func (s *spool) store(ctx context.Context, b Backend, t FileType) (ObjectRef, error) {
	ref := ObjectRef{Name: s.name(), Size: s.n}
	h := Handle{Type: t, Name: ref.Name}
	if fs, ok := b.(FileSaver); ok {
		if err := s.f.Sync(); err != nil {
			return ref, err
		}
		if err := s.f.Close(); err != nil {
			return ref, err
		}
		s.done = true
		if err := fs.SaveFile(ctx, h, s.f.Name()); err != nil {
			os.Remove(s.f.Name())
			return ref, err
		}
		return ref, nil
	}
	if _, err := s.f.Seek(0, io.SeekStart); err != nil {
		return ref, err
	}
	return ref, b.Save(ctx, h, s.n, s.f)
}

// discard removes the spool file.
func (s *spool) discard() {
	if !s.done {
		s.f.Close()
		os.Remove(s.f.Name())
		s.done = true
	}
}
