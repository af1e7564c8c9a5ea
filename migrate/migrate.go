// Package migrate changes the storage version of a stopped member's data
// dir, as etcdutl migrate does and with etcd's own schema code, so that
// another etcd minor version can start on it. Unlike etcdutl it never
// edits the db in place: it migrates a copy next to it and renames the
// copy over the db last, so a failure leaves the data dir as it was.
package migrate

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/coreos/go-semver/semver"
	"go.etcd.io/etcd/api/v3/version"
	"go.etcd.io/etcd/server/v3/storage/backend"
	"go.etcd.io/etcd/server/v3/storage/datadir"
	"go.etcd.io/etcd/server/v3/storage/schema"
	"go.etcd.io/etcd/server/v3/storage/wal"
	"go.etcd.io/etcd/server/v3/storage/wal/walpb"
	"go.uber.org/zap"

	"github.com/etcdkit/etcdkit/internal/boltpage"
	"github.com/etcdkit/etcdkit/internal/etcdfmt"
	"github.com/etcdkit/etcdkit/internal/fsutil"
)

// ErrTarget reports a target version etcdutl refuses.
var ErrTarget = errors.New("bad target version")

// ErrMigrate reports a migration etcd's schema code refuses (without
// --force): the data dir holds what the target version cannot read.
var ErrMigrate = errors.New("migration refused")

// Options name the data dir and the target.
type Options struct {
	DataDir string
	// Target is "X.Y", 3.5 or above.
	Target string
	// Force sets the storage version even when the migration fails, as
	// etcdutl's --force (not recommended).
	Force       bool
	LockTimeout time.Duration
	Logger      *zap.Logger
}

// Result says what was done.
type Result struct {
	From, To string
	Changed  bool
	Forced   bool
}

// ParseTarget reads "X.Y" as etcdutl does: 3.5 at least.
func ParseTarget(s string) (semver.Version, error) {
	if strings.Count(s, ".") != 1 {
		return semver.Version{}, fmt.Errorf(`%w: expected "X.Y", got %q`, ErrTarget, s)
	}
	v, err := semver.NewVersion(s + ".0")
	if err != nil {
		return semver.Version{}, fmt.Errorf("%w: %w", ErrTarget, err)
	}
	if v.LessThan(version.V3_5) {
		return semver.Version{}, fmt.Errorf(`%w: %q is not supported, the minimum is "3.5"`, ErrTarget, s)
	}
	return *v, nil
}

// Run migrates the data dir's db to the target storage version.
func Run(o Options) (Result, error) {
	target, err := ParseTarget(o.Target)
	if err != nil {
		return Result{}, err
	}
	lg := o.Logger
	if lg == nil {
		lg = zap.NewNop()
	}
	db := datadir.ToBackendFileName(o.DataDir)
	// The db must pass the same check as every other command, and stay
	// locked against an etcd starting while the copy is migrated.
	top, err := boltpage.Check(db, o.LockTimeout, nil, nil)
	if err == nil {
		err = etcdfmt.CheckBuckets(top)
	}
	if err != nil {
		return Result{}, err
	}
	lock, err := lockExclusive(db, o.LockTimeout)
	if err != nil {
		return Result{}, err
	}
	defer lock.Close()

	tmp, err := fsutil.TempSibling(db, "migrate")
	if err != nil {
		return Result{}, err
	}
	defer os.Remove(tmp) // gone after the rename; a leftover otherwise
	if err := copySynced(db, tmp); err != nil {
		return Result{}, err
	}
	res, err := migrateCopy(lg, o, tmp, target)
	if err != nil || !res.Changed {
		return res, err
	}
	if err := syncFile(tmp); err != nil {
		return res, err
	}
	return res, fsutil.RenameSynced(tmp, db)
}

func migrateCopy(lg *zap.Logger, o Options, path string, target semver.Version) (res Result, err error) {
	be := backend.NewDefaultBackend(lg, path)
	defer func() {
		if cerr := be.Close(); err == nil && cerr != nil {
			err = cerr
		}
	}()
	current, err := schema.DetectSchemaVersion(lg, be.ReadTx())
	if err != nil {
		return res, fmt.Errorf("%s: cannot detect the storage version (a data dir of etcd 3.5 or newer is needed): %w", o.DataDir, err)
	}
	res = Result{From: short(current), To: short(target)}
	if current == target {
		return res, nil
	}
	walVersion, err := readWALVersion(lg, o.DataDir)
	if err != nil {
		return res, err
	}
	tx := be.BatchTx()
	if err := schema.Migrate(lg, tx, walVersion, target); err != nil {
		if !o.Force {
			return res, fmt.Errorf("%w: %w (nothing was changed; --force sets the version anyway, not recommended)", ErrMigrate, err)
		}
		tx.LockOutsideApply()
		if target.LessThan(version.V3_6) {
			schema.UnsafeClearStorageVersion(tx)
		} else {
			schema.UnsafeSetStorageVersion(tx, &target)
		}
		tx.Unlock()
		res.Forced = true
	}
	be.ForceCommit()
	res.Changed = true
	return res, nil
}

// readWALVersion is the lowest etcd version that can read every entry of
// the WAL after its newest snapshot, as etcdutl reads it.
func readWALVersion(lg *zap.Logger, dataDir string) (wal.Version, error) {
	walDir := datadir.ToWALDir(dataDir)
	snaps, err := wal.ValidSnapshotEntries(lg, walDir)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", walDir, err)
	}
	snap := &walpb.Snapshot{}
	if len(snaps) > 0 {
		snap = snaps[len(snaps)-1]
	}
	w, err := wal.OpenForRead(lg, walDir, snap)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", walDir, err)
	}
	defer w.Close()
	v, err := wal.ReadWALVersion(w)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", walDir, err)
	}
	return v, nil
}

func short(v semver.Version) string { return fmt.Sprintf("%d.%d", v.Major, v.Minor) }

// lockExclusive takes the flock a running etcd holds, so none starts on
// the data dir while it is migrated.
func lockExclusive(path string, timeout time.Duration) (*os.File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	if err := boltpage.Lock(f, true, timeout); err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return f, nil
}

func copySynced(from, to string) error {
	if err := fsutil.CopyFile(from, to, true); err != nil {
		return fmt.Errorf("copy %s to %s: %w", from, filepath.Base(to), err)
	}
	return nil
}

func syncFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
