package backup

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"syscall"

	"github.com/nhscrypt/nhscrypt/internal/atomicfile"
)

// cachedFile is what the host remembers of a stored file, to skip reading
// it again when it has not changed. It is kept on the host only and never
// read from the repository.
type cachedFile struct {
	Path    string `json:"-"`
	PathB   []byte `json:"path"` // bytes: paths need not be UTF-8
	Size    int64  `json:"size"`
	MTime   int64  `json:"mtime_ns"`
	CTime   int64  `json:"ctime_ns"`
	Inode   uint64 `json:"inode"`
	Dev     uint64 `json:"dev"`
	SHA256  string `json:"sha256"`
	Object  string `json:"object"`
	Offset  int64  `json:"offset"`
	Member  string `json:"-"`
	MemberB []byte `json:"member"`
	Sparse  bool   `json:"sparse,omitempty"`
}

func (f *cachedFile) toJSON()   { f.PathB, f.MemberB = []byte(f.Path), []byte(f.Member) }
func (f *cachedFile) fromJSON() { f.Path, f.Member = string(f.PathB), string(f.MemberB) }

// stateCache is the host-local state of one repository.
type stateCache struct {
	dir, repo string
	files     map[string]cachedFile
}

func (s *stateCache) statePath() string   { return filepath.Join(s.dir, "state-"+s.repo+".json") }
func (s *stateCache) journalPath() string { return filepath.Join(s.dir, "journal-"+s.repo+".jsonl") }

// loadState reads the cache and the journal of an interrupted run.
func loadState(dir, repo string) (*stateCache, error) {
	s := &stateCache{dir: dir, repo: repo, files: map[string]cachedFile{}}
	data, err := os.ReadFile(s.statePath())
	if err == nil {
		var files []cachedFile
		if err := json.Unmarshal(data, &files); err != nil {
			// A damaged cache costs only a full re-read.
			files = nil
		}
		for _, f := range files {
			f.fromJSON()
			s.files[f.Path] = f
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	jf, err := os.Open(s.journalPath())
	if err == nil {
		defer jf.Close()
		sc := bufio.NewScanner(jf)
		sc.Buffer(make([]byte, 64<<10), 16<<20)
		for sc.Scan() {
			var f cachedFile
			if json.Unmarshal(sc.Bytes(), &f) == nil {
				f.fromJSON()
				s.files[f.Path] = f
			}
		}
	}
	return s, nil
}

// match returns the cached entry for path if the file is unchanged.
func (s *stateCache) match(path string, st *syscall.Stat_t, size int64) (cachedFile, bool) {
	c, ok := s.files[path]
	if !ok {
		return c, false
	}
	return c, c.Size == size && c.MTime == st.Mtim.Nano() && c.CTime == st.Ctim.Nano() && c.Inode == st.Ino && c.Dev == uint64(st.Dev)
}

// journal appends stored entries, so an interrupted run's objects are
// reused by the next run.
type journal struct{ f *os.File }

func (s *stateCache) openJournal() (*journal, error) {
	f, err := os.OpenFile(s.journalPath(), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	return &journal{f: f}, nil
}

func (j *journal) add(files []cachedFile) error {
	w := bufio.NewWriter(j.f)
	for _, f := range files {
		f.toJSON()
		b, _ := json.Marshal(f)
		w.Write(b)
		w.WriteByte('\n')
	}
	if err := w.Flush(); err != nil {
		return err
	}
	return j.f.Sync()
}

func (j *journal) close() { j.f.Close() }

// save replaces the cache with files and clears the journal.
func (s *stateCache) save(files []cachedFile) error {
	for i := range files {
		files[i].toJSON()
	}
	data, err := json.Marshal(files)
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(s.statePath(), data, 0o600, true); err != nil {
		return err
	}
	return os.Remove(s.journalPath())
}

// lockState takes the host's lock for the repository: two runs on one
// host are refused.
func lockState(dir, repo string) (func(), error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	p := filepath.Join(dir, "lock-"+repo)
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		pid, _ := os.ReadFile(p)
		f.Close()
		return nil, fmt.Errorf("%w (pid %s)", ErrLocked, string(pid))
	}
	f.Truncate(0)
	f.WriteAt([]byte(strconv.Itoa(os.Getpid())), 0)
	return func() { f.Truncate(0); f.Close() }, nil
}

// ErrLocked: another run of the same repository is in progress on this host.
var ErrLocked = errors.New("another backup run of this repository is in progress on this host")
