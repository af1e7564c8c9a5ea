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
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/time/rate"

	"github.com/etcdkit/etcdkit/cluster"
	"github.com/etcdkit/etcdkit/hashkv"
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
	// FileSHA256 is the sha256 of the whole stream, trailer included
	// (what the backup repository records as rawSha256).
	FileSHA256 string `json:"-"`
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

// Options tune Snapshot and Stream.
type Options struct {
	// Progress, when set, is called with the bytes received and the
	// member's db size (an estimate of the total).
	Progress func(done, total int64)
	// Done, when set, runs once the whole snapshot went through the
	// writer and its trailer matched, while the stream's facts are joined
	// and compared with the member's HashKV: the file's fsync, the end of
	// an upload. Its error fails the snapshot; the checks' failure is
	// returned after it returned.
	Done func() error
	// SkipMemberHash leaves out the member's HashKV: it blocks the
	// member's commits while it hashes (about 0.4 s per 600 MB of db on
	// the bench), and without it the snapshot's hash is recorded but not
	// compared.
	SkipMemberHash bool
	// RateLimit, when above 0, caps the stream at that many bytes per
	// second: the member's disk and network are shared with its clients,
	// and a slower read backs the member off through gRPC's flow control.
	RateLimit int64
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

// streamHook, set by tests, replaces the snapshot stream before it is
// read; afterProbe runs between the probe and the snapshot.
var (
	streamHook func(io.Reader) io.Reader
	afterProbe func()
)

// Snapshot streams a snapshot (see Stream) to path: into a unique hidden
// sibling (.<name>.etcdkit-part-<pid>-<random>), fsynced and renamed once
// it is checked, with its manifest beside it (FILE.json). On any failure
// nothing is kept.
func Snapshot(ctx context.Context, c *cluster.Cluster, path string, opts Options) (Manifest, error) {
	// A unique hidden sibling, created exclusively: two saves of the same
	// file never write into one temporary.
	part, err := fsutil.TempSibling(path, fsutil.PartMarker)
	if err != nil {
		return Manifest{}, err
	}
	f, err := os.OpenFile(part, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return Manifest{}, err
	}
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(part)
		}
	}()
	then := opts.Done
	opts.Done = func() error {
		if err := f.Sync(); err != nil {
			return fmt.Errorf("fsync %s: %w", part, err)
		}
		if then != nil {
			return then()
		}
		return nil
	}
	m, err := Stream(ctx, c, f, opts)
	if err != nil {
		return m, err
	}
	m.File = filepath.Base(path)
	if err := f.Close(); err != nil {
		return m, err
	}
	if err := fsutil.RenameSynced(part, path); err != nil {
		return m, err
	}
	ok = true
	return m, writeManifest(path, m)
}

// Stream takes a snapshot from the member named by the only endpoint, or
// else from the healthy member with the highest applied index, and writes
// it to w as it arrives, checking etcd's sha256 trailer and reading its
// facts on the way, with nothing on disk: its revision (its key bucket's
// last entry, never a separate request, which would race with writes),
// its live keys, its leases and its HashKV, which must equal the member's
// (ErrHashKVMismatch otherwise). The member's hash is asked for at the
// revision it had just before the stream, while the stream runs; the
// snapshot's own at its revision is recorded for restore drills. When a
// compaction raced the snapshot, its keys are the member's count.
func Stream(ctx context.Context, c *cluster.Cluster, w io.Writer, opts Options) (Manifest, error) {
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
		File: "snapshot.db", Time: time.Now().UTC(), Endpoint: src.Endpoint, MemberID: src.ID, MemberName: src.Name,
		EtcdVersion: src.Version, StorageVersion: src.StorageVersion,
	}
	checkRev, compactRev, err := probe(ctx, cli)
	if err != nil {
		return m, fmt.Errorf("snapshot from %s: %w", src.Endpoint, err)
	}
	if afterProbe != nil {
		afterProbe()
	}
	// The member hashes its store at checkRev while the stream runs.
	hashed := make(chan memberHash, 1)
	go func() {
		if opts.SkipMemberHash {
			hashed <- memberHash{rev: checkRev, skipped: true}
			return
		}
		resp, err := cli.HashKV(ctx, src.Endpoint, checkRev)
		hashed <- memberHash{checkRev, resp, err, false}
	}()
	member := sync.OnceValue(func() memberHash { return <-hashed })
	defer member()

	rc, err := cli.Snapshot(ctx)
	if err != nil {
		return m, fmt.Errorf("snapshot from %s: %w", src.Endpoint, err)
	}
	defer rc.Close()
	var in io.Reader = rc
	if opts.RateLimit > 0 {
		in = newLimitedReader(ctx, rc, opts.RateLimit)
	}
	if streamHook != nil {
		in = streamHook(rc)
	}
	tw, facts := etcdfmt.NewTrailerWriter(), newStreamFacts(checkRev, compactRev)
	var check io.Writer = io.MultiWriter(tw, facts)
	if opts.Progress != nil {
		check = &progressWriter{w: check, total: src.DBSize, fn: opts.Progress}
	}
	n, err := fanOut(in, w, check)
	if err != nil {
		return m, fmt.Errorf("snapshot from %s after %d bytes: %w", src.Endpoint, n, err)
	}
	sum, err := tw.Check()
	if err != nil {
		return m, fmt.Errorf("snapshot from %s: %w", src.Endpoint, err)
	}
	whole, err := tw.FileSum()
	if err != nil {
		return m, err
	}
	m.Size, m.SHA256, m.FileSHA256 = n, hex.EncodeToString(sum[:]), hex.EncodeToString(whole[:])
	done := make(chan error, 1)
	go func() {
		if opts.Done == nil {
			done <- nil
			return
		}
		done <- opts.Done()
	}()
	err = checkStream(ctx, c, cli, src.Endpoint, facts, member, &m)
	if derr := <-done; derr != nil {
		return m, derr
	}
	return m, err
}

// checkStream joins the stream's facts, compares its HashKV with the
// member's, counts its keys and records the cluster's ID.
func checkStream(ctx context.Context, c *cluster.Cluster, cli *clientv3.Client, endpoint string, facts *streamFacts, member func() memberHash, m *Manifest) error {
	f, err := facts.finish()
	raced := errors.Is(err, hashkv.ErrCompactionRaced)
	if err != nil && !raced {
		return fmt.Errorf("snapshot from %s: %w", endpoint, err)
	}
	m.Revision, m.Keys, m.Leases = f.Revision, f.Keys, f.Leases
	if m.HashKV, err = compareHash(endpoint, f.PageResult, raced, member()); err != nil {
		return err
	}
	if raced {
		// The stream's key count needs the compaction it was read with.
		if m.Keys, err = countKeys(ctx, cli, endpoint, m.Revision); err != nil {
			return err
		}
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

// limitedReader reads at most rate bytes per second on average.
type limitedReader struct {
	ctx context.Context
	r   io.Reader
	lim *rate.Limiter
}

func newLimitedReader(ctx context.Context, r io.Reader, bytesPerSecond int64) *limitedReader {
	burst := int(min(bytesPerSecond, 256<<10))
	return &limitedReader{ctx: ctx, r: r, lim: rate.NewLimiter(rate.Limit(bytesPerSecond), burst)}
}

func (l *limitedReader) Read(p []byte) (int, error) {
	if len(p) > l.lim.Burst() {
		p = p[:l.lim.Burst()]
	}
	n, err := l.r.Read(p)
	if n > 0 {
		if werr := l.lim.WaitN(l.ctx, n); werr != nil && err == nil {
			err = werr
		}
	}
	return n, err
}
