// Package quorum rebuilds a cluster that lost quorum from what survived:
// the most advanced of the surviving members' data dirs (by the WAL's
// committed index), its committed entries applied by etcd's own server
// (--force-new-cluster on a private copy, in-process, on loopback), then
// data dirs for every member of the new cluster written as a snapshot
// restore writes them. The surviving data dirs are only read.
package quorum

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"go.etcd.io/etcd/server/v3/storage/datadir"

	"github.com/etcdkit/etcdkit/internal/boltpage"
	"github.com/etcdkit/etcdkit/internal/etcdfmt"
	"github.com/etcdkit/etcdkit/internal/fsutil"
	"github.com/etcdkit/etcdkit/internal/localetcd"
	"github.com/etcdkit/etcdkit/restore"
)

var (
	// ErrForeign: the data dirs are not of one cluster.
	ErrForeign = errors.New("the data dirs belong to different clusters")
	// ErrSource: neither data dirs nor a db, or both.
	ErrSource = errors.New("give the surviving --from-data-dir DIRs, or one --from-db FILE")
)

// Options name what survived and the cluster to build.
type Options struct {
	// DataDirs are the surviving members' data dirs (stopped), or DB one
	// raw db copied out of a member (without its WAL: entries the member
	// had not applied are lost).
	DataDirs []string
	DB       string
	// Restore describes the new cluster (OutputDir, InitialCluster, token,
	// bump) as for a snapshot restore; its SkipHashCheck is set.
	Restore restore.Config
	// ScratchDir holds the private copy (default: the system's temporary
	// directory); it needs the chosen data dir's size.
	ScratchDir  string
	LockTimeout time.Duration
	// Log receives the force-new-cluster member's errors.
	Log slog.Handler
}

// Candidate is one surviving data dir.
type Candidate struct {
	DataDir   string `json:"dataDir"`
	ClusterID string `json:"clusterId"`
	MemberID  string `json:"memberId"`
	Commit    uint64 `json:"commit"` // the WAL's committed index
	Chosen    bool   `json:"chosen"`
}

// Result says which data dir was used and what was written.
type Result struct {
	Candidates []Candidate    `json:"candidates"`
	Restore    restore.Result `json:"restore"`
	Source     string         `json:"source"`
}

// Recover builds the new cluster's data dirs.
func Recover(ctx context.Context, o Options) (Result, error) {
	var res Result
	if len(o.DataDirs) > 0 == (o.DB != "") {
		return res, ErrSource
	}
	cfg := o.Restore
	cfg.SkipHashCheck = true // a member's db has no snapshot trailer
	if o.DB != "" {
		res.Source = o.DB
		r, err := restore.Restore(ctx, cfg, o.DB)
		res.Restore = r
		return res, err
	}
	for _, dir := range o.DataDirs {
		c, err := inspectDataDir(dir, o.LockTimeout)
		if err != nil {
			return res, err
		}
		res.Candidates = append(res.Candidates, c)
	}
	best := 0
	for i, c := range res.Candidates {
		if c.ClusterID != res.Candidates[0].ClusterID {
			return res, fmt.Errorf("%w: %s is of cluster %s, %s of %s", ErrForeign, res.Candidates[0].DataDir, res.Candidates[0].ClusterID, c.DataDir, c.ClusterID)
		}
		if c.Commit > res.Candidates[best].Commit {
			best = i
		}
	}
	res.Candidates[best].Chosen = true
	res.Source = res.Candidates[best].DataDir

	scratch, err := fsutil.MkdirTemp(o.ScratchDir, "etcdkit-recover-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(scratch)
	copyDir := filepath.Join(scratch, "member.etcd")
	if err := copyTree(datadir.ToMemberDir(res.Source), datadir.ToMemberDir(copyDir)); err != nil {
		return res, fmt.Errorf("copy %s: %w", res.Source, err)
	}
	log := o.Log
	if log == nil {
		log = slog.DiscardHandler
	}
	// etcd itself applies every committed entry of the WAL to the db and
	// forgets the lost members; the copy is then what a snapshot is.
	m, err := localetcd.Start(localetcd.Config{Name: "recover", DataDir: copyDir, ForceNewCluster: true, Log: log, Level: slog.LevelError})
	if err != nil {
		return res, fmt.Errorf("%s: etcd could not start on a copy with --force-new-cluster: %w", res.Source, err)
	}
	m.Stop()
	r, err := restore.Restore(ctx, cfg, datadir.ToBackendFileName(copyDir))
	res.Restore = r
	return res, err
}

// inspectDataDir reads a surviving data dir's cluster and member IDs and
// its committed index from the WAL, and makes sure no etcd holds it.
func inspectDataDir(dir string, lockTimeout time.Duration) (Candidate, error) {
	c := Candidate{DataDir: dir}
	f, err := boltpage.Open(datadir.ToBackendFileName(dir), lockTimeout)
	if err != nil {
		return c, err
	}
	f.Close()
	h, err := etcdfmt.ReadWALHead(datadir.ToWalDir(dir))
	c.ClusterID, c.MemberID, c.Commit = fmt.Sprintf("%x", h.ClusterID), fmt.Sprintf("%x", h.NodeID), h.Commit
	return c, err
}

// copyTree copies the files under src to dst (made new): a private
// scratch copy, so not fsynced (the restore that reads it writes atomically).
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		to := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(to, 0o700)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		return fsutil.CopyFile(p, to, false)
	})
}
