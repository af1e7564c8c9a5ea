// Package fsutil holds the few file-system steps every etcdkit command that
// writes uses to never leave half-written data under a real name: temporary
// siblings named after the process that owns them, fsync of files and
// directories, rename last, and free-space checks.
package fsutil

import (
	"crypto/rand"
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

// maxNameBytes is the file-name limit of Linux file systems.
const maxNameBytes = 255

// TempSibling returns a new name next to path for building its
// replacement, ".<base><marker><pid>-<random>", so the final rename stays
// on one file system and an operator can tell what left it. The random
// part makes it unique: two runs (or two goroutines) writing the same path
// never share a temporary; callers create it exclusively (O_EXCL, Mkdir).
// A long base is cut so the name fits the 255-byte file-name limit.
// Leftovers of the same marker whose process is gone (killed mid-way) are
// removed first; nothing is created.
func TempSibling(path, marker string) (string, error) {
	parent, base := filepath.Split(filepath.Clean(path))
	if parent == "" {
		parent = "."
	}
	const tail = 10 + 1 + 8 // pid, '-', random
	if n := maxNameBytes - 1 - len(marker) - tail; len(base) > n {
		base = base[:n]
	}
	prefix := "." + base + marker
	removeStale(parent, prefix)
	var rnd [4]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return "", err
	}
	return filepath.Join(parent, fmt.Sprintf("%s%d-%x", prefix, os.Getpid(), rnd)), nil
}

// removeStale removes the entries of dir named prefix<pid>... whose process
// is gone: what a run killed mid-way (kill -9) left under a temporary name.
func removeStale(dir, prefix string) {
	stale, _ := filepath.Glob(filepath.Join(dir, globEscape(prefix)+"*"))
	for _, s := range stale {
		var pid int
		if _, err := fmt.Sscanf(strings.TrimPrefix(filepath.Base(s), prefix), "%d", &pid); err == nil && pid > 0 && pid != os.Getpid() {
			if unix.Kill(pid, 0) == unix.ESRCH {
				_ = os.RemoveAll(s)
			}
		}
	}
}

// MkdirTemp creates a new directory in dir (the system's temporary
// directory for "") named prefix<pid>-<random>, after removing those of
// processes that are gone.
func MkdirTemp(dir, prefix string) (string, error) {
	if dir == "" {
		dir = os.TempDir()
	}
	removeStale(dir, prefix)
	return os.MkdirTemp(dir, fmt.Sprintf("%s%d-", prefix, os.Getpid()))
}

// globEscape quotes the characters filepath.Glob treats specially.
func globEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`*?[\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
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

// PartMarker marks a file still being written under a temporary name.
const PartMarker = ".etcdkit-part-"

// WriteFileSynced writes data to path atomically: a unique temporary
// sibling, fsynced, renamed over path, and the directory fsynced.
func WriteFileSynced(path string, data []byte, perm os.FileMode) error {
	tmp, err := TempSibling(path, PartMarker)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_WRONLY, perm)
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

// CopyFile copies from into a new file to (created with O_EXCL, mode
// 0600), fsynced when sync is set.
func CopyFile(from, to string, sync bool) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	if err == nil && sync {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return err
}

// writebackEvery is how many written bytes Writeback lets wait before it
// asks the kernel to start writing them back.
const writebackEvery = 8 << 20

// Writeback starts the kernel's writeback of a file written front to back
// (sync_file_range, SYNC_FILE_RANGE_WRITE) every 8 MiB, so the disk works
// while the file is written and the final fsync has little left to do.
// It is advice: an error shows up again at that fsync.
type Writeback struct {
	F       *os.File
	started int64
}

// Wrote tells w that the file is written up to byte end.
func (w *Writeback) Wrote(end int64) {
	if end-w.started >= writebackEvery {
		_ = unix.SyncFileRange(int(w.F.Fd()), w.started, end-w.started, unix.SYNC_FILE_RANGE_WRITE)
		w.started = end
	}
}
