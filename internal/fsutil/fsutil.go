// Package fsutil holds the few file-system steps every etcdkit command that
// writes uses to never leave half-written data under a real name: temporary
// siblings named after the process that owns them, fsync of files and
// directories, rename last, and free-space checks.
package fsutil

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrNoSpace reports a file system with too little free space.
var ErrNoSpace = errors.New("not enough free disk space")

// TempSibling returns a name next to path for building its replacement,
// ".<base><marker><pid>", so the final rename stays on one file system and
// an operator can tell what left it. Leftovers of the same marker whose
// process is gone (killed mid-way) are removed first. The name itself is
// removed if it exists; nothing is created.
func TempSibling(path, marker string) (string, error) {
	parent, base := filepath.Split(filepath.Clean(path))
	if parent == "" {
		parent = "."
	}
	prefix := "." + base + marker
	stale, _ := filepath.Glob(filepath.Join(parent, prefix+"*"))
	for _, s := range stale {
		var pid int
		if _, err := fmt.Sscanf(strings.TrimPrefix(filepath.Base(s), prefix), "%d", &pid); err == nil && pid > 0 && pid != os.Getpid() {
			if unix.Kill(pid, 0) == unix.ESRCH {
				_ = os.RemoveAll(s)
			}
		}
	}
	tmp := filepath.Join(parent, fmt.Sprintf("%s%d", prefix, os.Getpid()))
	if err := os.RemoveAll(tmp); err != nil {
		return "", err
	}
	return tmp, nil
}

// SyncDir fsyncs a directory, making the names in it durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	return nil
}

// RenameSynced renames from to to and fsyncs the directory of to.
func RenameSynced(from, to string) error {
	if err := os.Rename(from, to); err != nil {
		return fmt.Errorf("rename %s to %s: %w", from, to, err)
	}
	return SyncDir(filepath.Dir(to))
}

// FreeSpace is a file system's free space for unprivileged users, and an
// identity that tells whether two paths share a file system.
type FreeSpace struct {
	FS    [2]int32
	Bytes int64
}

// Free returns the free space of the file system holding path.
func Free(path string) (FreeSpace, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return FreeSpace{}, fmt.Errorf("statfs %s: %w", path, err)
	}
	return FreeSpace{FS: st.Fsid.Val, Bytes: int64(st.Bavail) * st.Bsize}, nil
}

// MiB formats a byte count for messages.
func MiB(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// WriteFileSynced writes data to path atomically: a temporary sibling,
// fsynced, renamed over path, and the directory fsynced.
func WriteFileSynced(path string, data []byte, perm os.FileMode) error {
	tmp := path + ".part"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, perm)
	if err != nil {
		return err
	}
	if _, err = f.Write(data); err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return RenameSynced(tmp, path)
}

// ErrTooLarge: a file that should be small (a key, a recipients list) is
// not, or is not a regular file (a device, a pipe).
var ErrTooLarge = errors.New("not a small regular file")

// ReadSmall reads a regular file of at most max bytes. It refuses devices
// and pipes (/dev/zero would never end) and larger files, so a path from a
// flag or a configuration file cannot make a command hang or fill memory.
func ReadSmall(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() || fi.Size() > max {
		return nil, fmt.Errorf("%s: %w (%s, %d bytes; at most %d)", path, ErrTooLarge, fi.Mode().Type(), fi.Size(), max)
	}
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err == nil && int64(len(b)) > max {
		err = fmt.Errorf("%s: %w (grew past %d bytes)", path, ErrTooLarge, max)
	}
	return b, err
}
