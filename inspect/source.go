// Package inspect reads what an etcd db holds, offline, with no server:
// keys at any uncompacted revision (get), from a snapshot file, a member's
// db, a data dir, or a backup in a repository. Every read goes through the
// pread scanner's check first (boltpage.Check); bbolt then looks up single
// revisions in a db that passed it. Inputs are never written.
package inspect

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"filippo.io/age"
	"go.etcd.io/etcd/server/v3/storage/datadir"

	"github.com/etcdkit/etcdkit/backup"
	"github.com/etcdkit/etcdkit/internal/fsutil"
)

// Source is what an inspection reads: exactly one of a snapshot or db File,
// a DataDir (with an optional WALDir), or a Backup in a Repo (decrypted
// with Identities and unpacked into TempDir for the inspection).
type Source struct {
	File            string
	DataDir, WALDir string
	Repo, Backup    string
	Identities      []age.Identity
	TempDir         string
	LockTimeout     time.Duration
}

// ErrSource reports a source that names none or more than one input.
var ErrSource = errors.New("give one source: a snapshot FILE, --db FILE, --data-dir DIR, or --repo URL with --backup ID|latest")

// Opened is a resolved source. Close removes what Open unpacked.
type Opened struct {
	// DB is the bolt file to read; Name names the input in messages.
	DB, Name string
	// DataDir and WALDir are set for a data dir.
	DataDir, WALDir string
	LockTimeout     time.Duration
	// Progress, when set, is told the bytes read by a scan of the db.
	Progress func(done, total int64)
	cleanup  func()
}

// Close removes a backup's unpacked copy, if any.
func (o *Opened) Close() {
	if o.cleanup != nil {
		o.cleanup()
	}
}

// Open resolves the source. A backup is streamed from the repository
// (download, decrypt, decompress, checked against its manifest) into a new
// directory under TempDir, removed by Close; nothing else is written.
func (s Source) Open(ctx context.Context) (*Opened, error) {
	n := 0
	for _, set := range []bool{s.File != "", s.DataDir != "", s.Repo != ""} {
		if set {
			n++
		}
	}
	if n != 1 || s.WALDir != "" && s.DataDir == "" {
		return nil, ErrSource
	}
	switch {
	case s.File != "":
		return &Opened{DB: s.File, Name: s.File, LockTimeout: s.LockTimeout}, nil
	case s.DataDir != "":
		wal := s.WALDir
		if wal == "" {
			wal = datadir.ToWalDir(s.DataDir)
		}
		db := datadir.ToBackendFileName(s.DataDir)
		return &Opened{DB: db, Name: db, DataDir: s.DataDir, WALDir: wal, LockTimeout: s.LockTimeout}, nil
	}
	return s.openBackup(ctx)
}

func (s Source) openBackup(ctx context.Context) (*Opened, error) {
	r, err := backup.Open(ctx, s.Repo)
	if err != nil {
		return nil, err
	}
	m, err := r.Find(ctx, s.Backup)
	if err != nil {
		return nil, err
	}
	rc, err := r.Open(ctx, m, s.Identities)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	dir, err := fsutil.MkdirTemp(s.TempDir, "etcdkit-inspect-")
	if err != nil {
		return nil, err
	}
	cleanup := func() { os.RemoveAll(dir) }
	path := filepath.Join(dir, "snapshot.db")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err == nil {
		// The reader fails before EOF if a byte differs from the manifest.
		_, err = io.Copy(f, rc)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		cleanup()
		return nil, fmt.Errorf("backup %s: %w", m.ID, err)
	}
	return &Opened{DB: path, Name: "backup " + m.ID, LockTimeout: time.Second, cleanup: cleanup}, nil
}
