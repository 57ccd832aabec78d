package sftp

// SetSessions is for measurements.
func SetSessions(n int) { sessions = n }

// Extensions reports whether the backend's connection still uses
// posix-rename and fsync (the server may refuse them).
func (b *Backend) Extensions() (posixRename, fsync bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cur == nil {
		return false, false
	}
	return b.cur.posixRename.Load(), b.cur.fsync.Load()
}
