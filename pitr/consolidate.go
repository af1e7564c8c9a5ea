package pitr

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"filippo.io/age"

	"github.com/etcdkit/etcdkit/backup"
	"github.com/etcdkit/etcdkit/hashkv"
	"github.com/etcdkit/etcdkit/internal/boltpage"
	"github.com/etcdkit/etcdkit/internal/etcdfmt"
	"github.com/etcdkit/etcdkit/internal/fsutil"
	"github.com/etcdkit/etcdkit/save"
)

// Consolidate builds a new full backup at the plan's revision from its
// base backup and the log, with no cluster: the base is downloaded into a
// temporary directory (checked against its manifest), the log replayed
// into it, its sha256 trailer written, its revision, keys, leases and
// HashKV read from the result, and it is stored as any backup (the
// manifest last). Restores then start from it and replay a short log.
// The temporary directory needs the db's size.
func Consolidate(ctx context.Context, repo *backup.Repository, p Plan, ids []age.Identity, opts backup.CreateOptions) (backup.Manifest, Applied, error) {
	base := p.Base()
	if p.Revision == base.Revision {
		return backup.Manifest{}, Applied{}, fmt.Errorf("%w: revision %d is backup %s's own: there is nothing to consolidate", ErrNotCovered, p.Revision, base.ID)
	}
	if err := p.FillTime(ctx, repo, ids); err != nil {
		return backup.Manifest{}, Applied{}, err
	}
	dir, err := fsutil.MkdirTemp(opts.TempDir, "etcdkit-consolidate-")
	if err != nil {
		return backup.Manifest{}, Applied{}, err
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "snapshot.db")
	if err := download(ctx, repo, base, ids, path); err != nil {
		return backup.Manifest{}, Applied{}, err
	}
	a, err := Replay(ctx, repo, p, ids, path)
	if err != nil {
		return backup.Manifest{}, a, err
	}
	sum, size, err := appendTrailer(path)
	if err != nil {
		return backup.Manifest{}, a, err
	}
	sm := base.Manifest
	sm.File, sm.Time, sm.Size, sm.SHA256 = "snapshot.db", p.Time.UTC(), size, hex.EncodeToString(sum)
	if sm.Revision, sm.Keys, sm.Leases, err = save.Facts(path); err != nil {
		return backup.Manifest{}, a, err
	}
	if sm.Revision != p.Revision {
		return backup.Manifest{}, a, fmt.Errorf("%w: the consolidated db ends at revision %d, not %d", ErrLog, sm.Revision, p.Revision)
	}
	h, err := hashkv.Compute(path, p.Revision, time.Second)
	if err != nil {
		return backup.Manifest{}, a, err
	}
	sm.HashKV = save.HashKV{Revision: p.Revision, CompactRevision: h.CompactRevision, Hash: h.Hash,
		Note: fmt.Sprintf("consolidated offline from backup %s and the revision log: no member to compare with", base.ID)}
	m, err := repo.StoreFile(ctx, path, sm, &backup.Consolidation{From: base.ID, FromRevision: base.Revision, Segments: a.Segments, Events: a.Events}, opts)
	return m, a, err
}

// download writes the base backup's db (without its trailer, checked) to
// path, ready for bolt.
func download(ctx context.Context, repo *backup.Repository, m backup.Manifest, ids []age.Identity, path string) error {
	rc, err := repo.Open(ctx, m, ids)
	if err != nil {
		return err
	}
	defer rc.Close()
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	tw := etcdfmt.NewTrailerWriter()
	n, err := io.Copy(io.MultiWriter(f, tw), rc) // the reader checks the manifest's sha256 at its end
	if err != nil {
		return err
	}
	if etcdfmt.HasSnapshotTrailer(n) {
		if _, err := tw.Check(); err != nil {
			return fmt.Errorf("backup %s: %w", m.ID, err)
		}
		if err := f.Truncate(n - etcdfmt.SnapshotTrailerLen); err != nil {
			return err
		}
	}
	if err := boltpage.StoreEmptyFreelist(f); err != nil {
		return fmt.Errorf("backup %s: %w", m.ID, err)
	}
	return f.Close()
}

// appendTrailer appends the sha256 of the file as etcd's snapshot trailer
// and returns it with the new size.
func appendTrailer(path string) ([]byte, int64, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return nil, 0, err
	}
	sum := h.Sum(nil)
	if _, err := f.WriteAt(sum, n); err != nil {
		return nil, 0, err
	}
	return sum, n + int64(len(sum)), f.Close()
}
