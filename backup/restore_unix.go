package backup

import (
	"time"

	"golang.org/x/sys/unix"
)

func mkfifo(p string, mode uint32) error { return unix.Mkfifo(p, mode) }

func setLinkTime(p string, t time.Time) {
	ts := []unix.Timespec{unix.NsecToTimespec(t.UnixNano()), unix.NsecToTimespec(t.UnixNano())}
	unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW)
}
