// Package save takes a snapshot of a running cluster (etcdctl snapshot save):
// from the member named, or the healthy one furthest along, streamed to a
// file with etcd's sha256 trailer checked, fsynced and renamed, and a
// manifest (FILE.json) beside it with the revision read from the snapshot
// itself.
package save

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/cluster"
	"github.com/etcdkit/etcdkit/internal/etcdfmt"
	"github.com/etcdkit/etcdkit/internal/fsutil"
)

// Manifest describes a saved snapshot. It is written beside it as
// FILE.json, and the backup repository stores it with each backup.
type Manifest struct {
	File           string    `json:"file"`
	Time           time.Time `json:"time"`
	Revision       int64     `json:"revision"` // read from the snapshot itself
	ClusterID      string    `json:"clusterId"`
	MemberID       string    `json:"memberId"`
	MemberName     string    `json:"memberName"`
	Endpoint       string    `json:"endpoint"`
	EtcdVersion    string    `json:"etcdVersion"`
	StorageVersion string    `json:"storageVersion,omitempty"`
	Size           int64     `json:"size"`   // bytes of the file, trailer included
	SHA256         string    `json:"sha256"` // of the db bytes: the trailer's value
	// Keys and Leases count the snapshot's live keys and its leases, and
	// HashKV is its hash checked against the member's: what a restore
	// drill compares with a member booted on the restored data. Manifests
	// of older etcdkit versions lack them (zero).
	Keys   int64  `json:"keys,omitzero"`
	Leases int64  `json:"leases,omitzero"`
	HashKV HashKV `json:"hashKV,omitzero"`
}

// manifestPath is where the manifest of the snapshot at path is written.
func manifestPath(path string) string { return path + ".json" }

// ReadManifest reads the manifest written beside a snapshot (or the given
// .json file itself).
func ReadManifest(path string) (Manifest, error) {
	p := path
	if filepath.Ext(p) != ".json" {
		p = manifestPath(path)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return Manifest{}, err
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return Manifest{}, fmt.Errorf("%s: not a snapshot manifest: %w", p, err)
	}
	return m, nil
}

// Options tune Save.
type Options struct {
	// Progress, when set, is called with the bytes received and the
	// member's db size (an estimate of the total).
	Progress func(done, total int64)
	// Tee, when set, also receives every byte of the snapshot as it
	// arrives (before the trailer is checked): the backup repository
	// compresses and uploads it meanwhile. Its write error fails the save.
	Tee io.Writer
	// Alongside, when set, runs once the file is complete (its trailer
	// checked, synced) under its temporary name, while its content is
	// checked (revision, keys, leases, HashKV against the member): the
	// backup repository uploads it meanwhile. It must only read the file.
	// Its error fails the save; a failed check cancels its context, and
	// Snapshot returns only after it returned.
	Alongside func(ctx context.Context, path string) error
}

// ErrNoMember reports that no member can serve a snapshot.
var ErrNoMember = errors.New("no healthy member to take the snapshot from")

// minRate is the slowest transfer the snapshot timeout allows for.
const minRate = 4 << 20 // bytes per second

// SaveTimeout is how long a snapshot of a db of size bytes may take: the
// command timeout plus the db at minRate, instead of etcdctl's fixed
// timeout that large dbs outgrow.
func Timeout(command time.Duration, size int64) time.Duration {
	return command + 30*time.Second + time.Duration(size/minRate)*time.Second
}

// beforeCrossCheck, set by tests, changes the saved file before its HashKV
// is checked against the member's.
var beforeCrossCheck func(path string)

// Save streams a snapshot from the member named by the only endpoint, or
// else from the healthy member with the highest applied index, to path:
// into a unique hidden sibling (.<name>.etcdkit-part-<pid>-<random>),
// checking the server's sha256 trailer on the way, fsynced and renamed. The
// snapshot's HashKV at its revision must equal the member's (ErrHashKVMismatch
// otherwise, and nothing is kept). The manifest is written beside it.
func Snapshot(ctx context.Context, c *cluster.Cluster, path string, opts Options) (Manifest, error) {
	src, err := pickMember(ctx, c)
	if err != nil {
		return Manifest{}, err
	}
	cli, err := c.ForEndpoint(src.Endpoint)
	if err != nil {
		return Manifest{}, err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(ctx, Timeout(c.Timeout(), src.DBSize))
	defer cancel()

	m := Manifest{
		File: filepath.Base(path), Time: time.Now().UTC(), Endpoint: src.Endpoint, MemberID: src.ID, MemberName: src.Name,
		EtcdVersion: src.Version, StorageVersion: src.StorageVersion,
	}
	// A unique hidden sibling, created exclusively: two saves of the same
	// file never write into one temporary.
	part, err := fsutil.TempSibling(path, fsutil.PartMarker)
	if err != nil {
		return m, err
	}
	f, err := os.OpenFile(part, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return m, err
	}
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(part)
		}
	}()
	rc, err := cli.Snapshot(ctx)
	if err != nil {
		return m, fmt.Errorf("snapshot from %s: %w", src.Endpoint, err)
	}
	defer rc.Close()
	tw := etcdfmt.NewTrailerWriter()
	var w io.Writer = io.MultiWriter(f, tw)
	if opts.Tee != nil {
		w = io.MultiWriter(f, tw, opts.Tee)
	}
	if opts.Progress != nil {
		w = &progressWriter{w: w, total: src.DBSize, fn: opts.Progress}
	}
	n, err := io.CopyBuffer(w, rc, make([]byte, 1<<20))
	if err != nil {
		return m, fmt.Errorf("snapshot from %s after %d bytes: %w", src.Endpoint, n, err)
	}
	sum, err := tw.Check()
	if err != nil {
		return m, fmt.Errorf("snapshot from %s: %w", src.Endpoint, err)
	}
	if err := f.Sync(); err != nil {
		return m, fmt.Errorf("fsync %s: %w", part, err)
	}
	if err := f.Close(); err != nil {
		return m, err
	}
	m.Size, m.SHA256 = n, hex.EncodeToString(sum[:])
	var along chan error
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	if opts.Alongside != nil {
		along = make(chan error, 1)
		go func() { along <- opts.Alongside(actx, part) }()
	}
	err = checkContent(ctx, c, cli, src.Endpoint, part, &m)
	if along != nil {
		if err != nil {
			cancel()
		}
		if aerr := <-along; err == nil {
			err = aerr
		}
	}
	if err != nil {
		return m, err
	}
	if err := fsutil.RenameSynced(part, path); err != nil {
		return m, err
	}
	ok = true
	return m, writeManifest(path, m)
}

// checkContent reads the saved file's revision, keys and leases, compares
// its HashKV with the member's and records the cluster's ID.
func checkContent(ctx context.Context, c *cluster.Cluster, cli *clientv3.Client, endpoint, part string, m *Manifest) error {
	var err error
	if m.Revision, m.Keys, m.Leases, err = Facts(part); err != nil {
		return fmt.Errorf("snapshot from %s: %w", endpoint, err)
	}
	if beforeCrossCheck != nil {
		beforeCrossCheck(part)
	}
	if m.HashKV, err = crossCheck(ctx, cli, endpoint, part, m.Revision); err != nil {
		return err
	}
	m.ClusterID, err = clusterID(ctx, c)
	return err
}

// writeManifest writes m beside the snapshot at path, atomically.
func writeManifest(path string, m Manifest) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	return fsutil.WriteFileSynced(manifestPath(path), append(b, '\n'), 0o644)
}

// pickMember chooses the member to snapshot.
func pickMember(ctx context.Context, c *cluster.Cluster) (cluster.MemberStatus, error) {
	var best *cluster.MemberStatus
	st := c.Status(ctx, 0)
	for i, s := range st {
		if !s.OK() {
			continue
		}
		if best == nil || s.RaftAppliedIndex > best.RaftAppliedIndex || s.RaftAppliedIndex == best.RaftAppliedIndex && best.IsLeader {
			best = &st[i]
		}
	}
	if len(st) == 1 && best == nil {
		return cluster.MemberStatus{}, fmt.Errorf("%w: %s: %s", ErrNoMember, st[0].Endpoint, st[0].Error)
	}
	if best == nil {
		return cluster.MemberStatus{}, ErrNoMember
	}
	return *best, nil
}

func clusterID(ctx context.Context, c *cluster.Cluster) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, c.Timeout())
	defer cancel()
	resp, err := c.Client.MemberList(ctx)
	if err != nil {
		return "", fmt.Errorf("%w: %w", cluster.ErrUnreachable, err)
	}
	return fmt.Sprintf("%x", resp.Header.ClusterId), nil
}

type progressWriter struct {
	w     io.Writer
	done  int64
	total int64
	fn    func(done, total int64)
}

func (p *progressWriter) Write(b []byte) (int, error) {
	n, err := p.w.Write(b)
	p.done += int64(n)
	p.fn(p.done, max(p.total, p.done))
	return n, err
}
