// Package restore turns an etcd snapshot into data dirs that etcd boots, as
// `etcdutl snapshot restore` does, but for every member of the cluster in one
// run, reading the snapshot once (the sha256 trailer is checked while the db
// is copied), building each data dir under a temporary name and renaming it
// into place only when it is complete and synced.
//
// The db is edited with bbolt (membership, consistent index, the optional
// revision bump); the WAL and the .snap file are written with etcd's own
// wal and snap packages, so the result is what etcd itself would read.
package restore

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/types"
	"go.etcd.io/etcd/server/v3/config"
	"go.etcd.io/etcd/server/v3/etcdserver/api/membership"
	"go.etcd.io/etcd/server/v3/storage/datadir"
	"go.etcd.io/etcd/server/v3/storage/wal"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/etcdkit/etcdkit/internal/boltpage"
	"github.com/etcdkit/etcdkit/internal/etcdfmt"
	"github.com/etcdkit/etcdkit/internal/fsutil"
)

// Defaults of etcdutl snapshot restore.
const (
	DefaultName     = "default"
	DefaultPeerURL  = "http://localhost:2380"
	DefaultToken    = "etcd-cluster"
	tempMarker      = ".etcdkit-restore-"
	dirPerm         = 0o700
	dbPerm          = 0o600
	consensusTerm   = 1 // the term of the new cluster's first entries
	defaultDirShape = "%s.etcd"
)

// Errors a caller maps to exit codes.
var (
	// ErrHashMismatch: the snapshot's bytes do not match its sha256 trailer
	// (an etcdfmt.TrailerError).
	ErrHashMismatch = etcdfmt.ErrTrailer
	// ErrNoTrailer: the input has no sha256 trailer and the hash check was
	// not skipped.
	ErrNoTrailer = errors.New("snapshot has no sha256 trailer (a db copied from a data dir? then pass --skip-hash-check)")
	// ErrTargetExists: a data dir is not empty or a WAL dir exists.
	ErrTargetExists = errors.New("refusing to overwrite")
	// ErrNoSpace: the target file system has too little free space.
	ErrNoSpace = fsutil.ErrNoSpace
	// maxBump bounds --bump-revision: far above any real need (the
	// Kubernetes recipe bumps by 10^9), far below where a revision wraps.
	maxBump uint64 = 1 << 62
	// ErrNotEtcd: a bolt file without etcd's buckets.
	ErrNotEtcd = etcdfmt.ErrNotEtcd
	// ErrConfig: the cluster flags are inconsistent.
	ErrConfig = errors.New("bad restore configuration")
)

// Config says what to restore where. With OutputDir set, every member of
// InitialCluster gets a data dir OutputDir/<name>.etcd, and Name, PeerURLs,
// DataDir and WALDir are not used; otherwise one data dir is written for
// the member Name, as etcdutl does.
type Config struct {
	Name                string
	PeerURLs            []string
	DataDir             string // default <Name>.etcd
	WALDir              string // default <DataDir>/member/wal
	OutputDir           string
	InitialCluster      string
	InitialClusterToken string

	SkipHashCheck bool
	// ExpectSHA256, when set, is what the snapshot's db bytes must hash
	// to (a backup manifest's record of them): checked with the trailer,
	// before anything is committed. A restore from a repository relies on
	// it instead of hashing the stream a second time.
	ExpectSHA256  string
	BumpRevision  uint64 // add to the latest revision; needs MarkCompacted
	MarkCompacted bool   // mark the bumped revision compacted
	// BumpKubernetes bumps by KubernetesBump and marks it compacted when
	// BumpRevision is 0 and the snapshot holds Kubernetes data (keys
	// under /registry/): clients that watched the old cluster then re-list
	// instead of waiting for revisions the restore rolled back.
	BumpKubernetes bool

	// Replay, when set, edits the first member's db after the snapshot is
	// copied and checked and before it is made part of the new cluster
	// (a point-in-time restore applies the revision log there); the other
	// members' dbs are copies of the result. The db at path is not open
	// elsewhere.
	Replay func(ctx context.Context, path string) error

	// Progress, when set, is called with the bytes of the snapshot read so
	// far.
	Progress func(done, total int64)
	// Logger receives etcd's wal and snap packages' logs; nil is silent.
	Logger *zap.Logger
}

// Member is one restored data dir.
type Member struct {
	Name    string `json:"name"`
	ID      string `json:"id"` // hex, as etcdctl member list prints it
	DataDir string `json:"dataDir"`
	WALDir  string `json:"walDir,omitempty"`
}

// Result describes a finished restore.
type Result struct {
	ClusterID string   `json:"clusterId"`
	Members   []Member `json:"members"`
	// Revision is the latest revision in the restored db (after a bump).
	Revision int64 `json:"revision"`
	// DBSize is the size of the snapshot's db without its trailer.
	DBSize int64 `json:"dbSize"`
	// SHA256 is the verified hash, empty when the check was skipped.
	SHA256 string `json:"sha256,omitempty"`
	// DryRun says nothing was written (DryRun's result).
	DryRun bool `json:"dryRun,omitempty"`
	// KubernetesBump says the revisions were bumped by KubernetesBump
	// because the snapshot holds Kubernetes data (BumpKubernetes).
	KubernetesBump bool `json:"kubernetesBump,omitempty"`
}

// KubernetesBump is the revision bump of a Kubernetes restore, as the
// Kubernetes documentation's etcdutl recipe gives it: far above the
// revisions a cluster writes between a backup and its restore.
const KubernetesBump = 1_000_000_000

// kubernetesPrefix is where kube-apiserver keeps its objects.
var kubernetesPrefix = []byte("/registry/")

// srcFacts is what the check of the source learned on the way.
type srcFacts struct {
	latest     int64 // main revision of the key bucket's last entry
	kubernetes bool  // some key is under /registry/
}

// bump is the revision bump a restore of the source applies.
func (cfg Config) bump(f srcFacts) (uint64, bool) {
	if cfg.BumpRevision == 0 && cfg.BumpKubernetes && f.kubernetes {
		return KubernetesBump, true
	}
	return cfg.BumpRevision, false
}

// target is one member's data dir being built. A new data dir is built as
// a hidden sibling and renamed into place; in an existing empty data dir
// (a mount point such as /var/lib/etcd, which cannot be replaced) it is
// built in a hidden entry of it, whose member directory is renamed to
// member. Either way the temporary has a data dir's layout (etcd's
// storage/datadir names every path in it).
type target struct {
	member     *membership.Member
	dataDir    string // final names
	walDir     string // "" when inside dataDir
	tmpData    string // temporary data dir
	tmpWAL     string
	db         *os.File
	committed  bool
	dataExists bool // dataDir exists (and is empty)
}

// root is what the commit renames into place: the data dir, or its member
// directory when the data dir already exists.
func (t *target) root() string {
	if t.dataExists {
		return datadir.ToMemberDir(t.dataDir)
	}
	return t.dataDir
}

// built is the temporary that becomes root().
func (t *target) built() string {
	if t.dataExists {
		return datadir.ToMemberDir(t.tmpData)
	}
	return t.tmpData
}

func (t *target) dbPath() string  { return datadir.ToBackendFileName(t.tmpData) }
func (t *target) snapDir() string { return datadir.ToSnapDir(t.tmpData) }
func (t *target) walPath() string {
	if t.walDir != "" {
		return t.tmpWAL
	}
	return datadir.ToWalDir(t.tmpData)
}

// phaseHook is called as a restore passes each step; tests use it to kill
// the process at every point that matters.
var phaseHook = func(phase string) {}

// DryRun makes every check Restore makes on the snapshot file at path (the
// flags and the IDs they give, the target dirs, free space for every
// member, the sha256 trailer, bolt's consistency and etcd's buckets) and
// returns what Restore would: the members with their IDs and dirs, the
// cluster ID, the revision (after a bump) and the db's size. It writes
// nothing. The errors are Restore's, in Restore's order.
func DryRun(ctx context.Context, cfg Config, path string) (Result, error) {
	cl, targets, err := cfg.plan(zap.NewNop())
	if err != nil {
		return Result{}, err
	}
	f, fi, err := openSnapshot(path)
	if err != nil {
		return Result{}, err
	}
	defer f.Close()
	// The bolt check, learning the latest revision on the way, beside the
	// sha256 of the file, as in a restore.
	var facts srcFacts
	verdict := make(chan error, 1)
	go func() {
		var err error
		facts, err = checkDB(path, path)
		verdict <- err
	}()
	wait := sync.OnceValue(func() error { return <-verdict })
	defer wait() // never leave the scan reading after return
	for _, t := range targets {
		if err := t.checkTarget(); err != nil {
			return Result{}, err
		}
	}
	size := fi.Size()
	if err := checkSpace(targets, size, plannedDirs); err != nil {
		return Result{}, err
	}
	res := Result{DryRun: true, DBSize: size}
	hasTrailer := etcdfmt.HasSnapshotTrailer(size)
	if hasTrailer {
		res.DBSize = size - etcdfmt.SnapshotTrailerLen
	}
	switch {
	case !hasTrailer && !cfg.SkipHashCheck:
		return Result{}, fmt.Errorf("%s: %w", path, ErrNoTrailer)
	case hasTrailer && !cfg.SkipHashCheck:
		tw := etcdfmt.NewTrailerWriter()
		if _, err := io.CopyBuffer(tw, io.NewSectionReader(f, 0, size), make([]byte, 1<<20)); err != nil {
			return Result{}, fmt.Errorf("%s: %w", path, err)
		}
		sum, err := tw.Check()
		if err != nil {
			return Result{}, fmt.Errorf("%s: %w", path, err)
		}
		res.SHA256 = hex.EncodeToString(sum[:])
	}
	if err := wait(); err != nil {
		return Result{}, err
	}
	bump, kube := cfg.bump(facts)
	if bump > uint64(math.MaxInt64-facts.latest) {
		return Result{}, fmt.Errorf("%w: --bump-revision %d: revision %d plus it passes the largest revision, %d", ErrConfig, bump, facts.latest, int64(math.MaxInt64))
	}
	res.Revision, res.KubernetesBump = facts.latest+int64(bump), kube
	for _, t := range targets {
		res.Members = append(res.Members, Member{Name: t.member.Name, ID: t.member.ID.String(), DataDir: t.dataDir, WALDir: t.walDir})
	}
	res.ClusterID = cl.ID().String()
	return res, ctx.Err()
}

// openSnapshot opens a snapshot file (or a bare db) and refuses what is no
// bolt file or is shorter than its meta page says.
func openSnapshot(path string) (*os.File, os.FileInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	fi, err := f.Stat()
	if err == nil && fi.IsDir() {
		err = fmt.Errorf("%s: %w: it is a directory (a snapshot is a file)", path, boltpage.ErrNotBolt)
	}
	if err == nil {
		var m boltpage.Meta
		if m, err = boltpage.ReadMeta(f); err == nil {
			err = m.CheckSize(fi.Size())
		}
		if err != nil {
			err = fmt.Errorf("%s: %w", path, err)
		}
	}
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return f, fi, nil
}

// Restore restores the snapshot file at path.
func Restore(ctx context.Context, cfg Config, path string) (Result, error) {
	// The flags first: a bad flag is reported before the input is read.
	if _, _, err := cfg.plan(zap.NewNop()); err != nil {
		return Result{}, err
	}
	f, fi, err := openSnapshot(path)
	if err != nil {
		return Result{}, err
	}
	defer f.Close()
	// A file's length says whether it has a trailer: refuse one without
	// before copying it (at 8 GB the copy takes half a minute).
	if !cfg.SkipHashCheck && !etcdfmt.HasSnapshotTrailer(fi.Size()) {
		return Result{}, fmt.Errorf("%s: %w", path, ErrNoTrailer)
	}
	// bbolt edits the copies: it must only see pages the scanner passed.
	// The source is scanned while it is copied (the copy is the long
	// part), and the edit waits for the verdict; nothing is committed
	// before it.
	type scan struct {
		facts srcFacts
		err   error
	}
	verdict := make(chan scan, 1)
	go func() {
		f, err := checkDB(path, path)
		verdict <- scan{f, err}
	}()
	_ = unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_SEQUENTIAL)
	return restoreFrom(ctx, cfg, f, path, fi.Size(), func() (srcFacts, error) { v := <-verdict; return v.facts, v.err })
}

// RestoreFrom restores a snapshot read from r; name says where it comes
// from in messages about the input. size is its length in bytes if known
// (for the free-space check), else -1.
func RestoreFrom(ctx context.Context, cfg Config, r io.Reader, name string, size int64) (Result, error) {
	return restoreFrom(ctx, cfg, r, name, size, nil)
}

// checkDB runs bolt's checks (boltpage.Check) on the db at path and refuses
// one without etcd's buckets, naming the input as name. On the way it
// learns the latest revision and whether the data is Kubernetes'.
func checkDB(path, name string) (srcFacts, error) {
	var f srcFacts
	top, err := boltpage.Check(path, time.Second, nil, func(e boltpage.Entry) error {
		switch {
		case e.Depth == 1 && !e.Bucket && bytes.Equal(e.Top, etcdfmt.BucketKey):
			r, _, err := etcdfmt.ParseRevKey(e.Key)
			if err != nil {
				return err
			}
			f.latest = r.Main // entries come in revision order
			if !f.kubernetes {
				kv, err := etcdfmt.ParseKeyValue(e.Value)
				if err != nil {
					return err
				}
				f.kubernetes = bytes.HasPrefix(kv.Key, kubernetesPrefix)
			}
		}
		return nil
	})
	switch {
	case err != nil && name == path:
		return f, err
	case err != nil: // Check's errors are "<path>: <problem>"
		return f, fmt.Errorf("%s: %w", name, errors.Unwrap(err))
	}
	if err := etcdfmt.CheckBuckets(top); err != nil {
		return f, fmt.Errorf("%s: %w", name, err)
	}
	return f, nil
}

// restoreFrom is RestoreFrom; scanned, when set, waits for the verdict of
// a check of the source already under way; else the stream is checked as
// it passes, or failing that the first copy.
// Either way bbolt edits a copy only after it passed.
func restoreFrom(ctx context.Context, cfg Config, r io.Reader, name string, size int64, scanned func() (srcFacts, error)) (res Result, err error) {
	lg := cfg.Logger
	if lg == nil {
		lg = zap.NewNop()
	}
	cl, targets, err := cfg.plan(lg)
	if err != nil {
		return res, err
	}
	// Clean up unless it succeeded: after an error, and also while a
	// panic unwinds (the command's last line of defence reports it).
	succeeded := false
	defer func() {
		if !succeeded {
			for _, t := range targets {
				t.abort()
			}
		}
	}()
	for _, t := range targets {
		if err := t.prepare(); err != nil {
			return res, err
		}
	}
	if size > 0 {
		if err := checkSpace(targets, size, builtDirs); err != nil {
			return res, err
		}
	}
	files := make([]*os.File, len(targets))
	for i, t := range targets {
		files[i] = t.db
	}
	if cfg.Replay != nil {
		files = files[:1] // the others copy the replayed db
	}
	phaseHook("copy")
	var progress func(int64)
	if cfg.Progress != nil {
		progress = func(done int64) { cfg.Progress(done, size) }
	}
	// A stream is checked as it passes (streamCheck), so that every copy
	// is written directly and none is read again; where the stream alone
	// proves nothing, the first copy is checked after.
	var sc *streamCheck
	var check checker
	if scanned == nil {
		sc = newStreamCheck()
		defer sc.close()
		check = sc
	}
	cp, err := streamSnapshot(ctx, r, name, files, !cfg.SkipHashCheck, check, progress)
	if err != nil {
		return res, err
	}
	switch {
	case !cp.HasTrailer && !cfg.SkipHashCheck:
		return res, fmt.Errorf("%s: %w", name, ErrNoTrailer)
	case cp.HashChecked && cp.HasTrailer:
		if err := etcdfmt.CheckTrailer(cp.Size+etcdfmt.SnapshotTrailerLen, cp.Actual, cp.Expected); err != nil {
			return res, fmt.Errorf("%s: %w", name, err)
		}
	}
	if cfg.ExpectSHA256 != "" {
		if !cp.HashChecked || !cp.HasTrailer {
			return res, fmt.Errorf("%s: %w: the db bytes were not hashed, so they cannot be checked against the manifest", name, ErrHashMismatch)
		}
		if got := hex.EncodeToString(cp.Actual[:]); got != cfg.ExpectSHA256 {
			return res, fmt.Errorf("%s: %w: the db bytes hash to %s, the manifest says %s", name, ErrHashMismatch, got, cfg.ExpectSHA256)
		}
	}
	m, err := boltpage.ReadMeta(targets[0].db)
	if err == nil {
		err = m.CheckSize(cp.Size)
	}
	if err != nil {
		return res, fmt.Errorf("%s: %w", name, err)
	}
	checked := scanned
	if checked == nil {
		checked = func() (srcFacts, error) {
			f, err := sc.facts()
			if err == nil {
				return f, nil
			}
			lg.Info("the snapshot stream alone did not prove the db sound; checking the restored copy", zap.String("snapshot", name), zap.Error(err))
			phaseHook("check-copy")
			return checkDB(targets[0].dbPath(), name)
		}
	}
	facts, err := checked()
	if err != nil {
		return res, err
	}
	bump, kube := cfg.bump(facts)
	res.KubernetesBump = kube
	res.DBSize = cp.Size
	if cp.HashChecked && cp.HasTrailer {
		res.SHA256 = hex.EncodeToString(cp.Actual[:])
	}

	if cfg.Replay != nil {
		if err := replayInto(ctx, cfg.Replay, targets); err != nil {
			return res, err
		}
	}
	phaseHook("copied")
	commit := uint64(len(cl.Members()))
	for _, t := range targets {
		rev, err := finishDB(t.db, cl, commit, consensusTerm, bump)
		t.db = nil
		if err != nil {
			return res, err
		}
		res.Revision = rev
		phaseHook("db-finished")
		if err := writeWALAndSnap(lg, t.walPath(), t.snapDir(), cl, t.member.ID, commit, consensusTerm); err != nil {
			return res, err
		}
		phaseHook("wal-written")
		if err := t.syncDirs(); err != nil {
			return res, err
		}
	}
	phaseHook("synced")
	for _, t := range targets {
		if err := t.commit(); err != nil {
			return res, err
		}
		res.Members = append(res.Members, Member{Name: t.member.Name, ID: t.member.ID.String(), DataDir: t.dataDir, WALDir: t.walDir})
	}
	res.ClusterID = cl.ID().String()
	succeeded = true
	return res, nil
}

// replayInto runs the replay on the first target's db and copies the
// result into the others'.
func replayInto(ctx context.Context, replay func(context.Context, string) error, targets []*target) error {
	first := targets[0].db
	// bolt would otherwise walk every page to find the free ones.
	if err := boltpage.StoreEmptyFreelist(first); err != nil {
		return fmt.Errorf("%s: %w", first.Name(), err)
	}
	if err := replay(ctx, first.Name()); err != nil {
		return err
	}
	fi, err := first.Stat()
	if err != nil {
		return err
	}
	for _, t := range targets[1:] {
		if _, err := t.db.ReadFrom(io.NewSectionReader(first, 0, fi.Size())); err != nil {
			return fmt.Errorf("copy the replayed db into %s: %w", t.db.Name(), err)
		}
	}
	return nil
}

// plan validates the configuration as etcd validates its bootstrap flags
// and names the data dirs to write.
func (cfg Config) plan(lg *zap.Logger) (*membership.RaftCluster, []*target, error) {
	if (cfg.BumpRevision > 0) != cfg.MarkCompacted {
		return nil, nil, fmt.Errorf("%w: --bump-revision and --mark-compacted go together", ErrConfig)
	}
	if cfg.InitialCluster == "" {
		// etcdutl would use default=http://localhost:2380 whatever the
		// name; the member being restored is the natural cluster of one.
		cfg.InitialCluster = cfg.Name + "=" + strings.Join(cfg.PeerURLs, ",")
	}
	// Refused before anything is written; the exact limit (the snapshot's
	// revision plus the bump) is checked again when the db is edited.
	if cfg.BumpRevision > maxBump {
		return nil, nil, fmt.Errorf("%w: --bump-revision %d: at most %d (a revision must stay below 2^63)", ErrConfig, cfg.BumpRevision, maxBump)
	}
	ics, err := types.NewURLsMap(cfg.InitialCluster)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: --initial-cluster %q: %w", ErrConfig, cfg.InitialCluster, err)
	}
	if config.CheckDuplicateURL(ics) {
		return nil, nil, fmt.Errorf("%w: --initial-cluster %s has a duplicate peer URL", ErrConfig, ics)
	}
	cl, err := membership.NewClusterFromURLsMap(lg, cfg.InitialClusterToken, ics)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	verify := func(name string, urls []string) error {
		purls, err := types.NewURLs(urls)
		if err != nil {
			return fmt.Errorf("%w: --initial-advertise-peer-urls %q: %w", ErrConfig, strings.Join(urls, ","), err)
		}
		sc := config.ServerConfig{Logger: lg, Name: name, PeerURLs: purls, InitialPeerURLsMap: ics, InitialClusterToken: cfg.InitialClusterToken}
		if err := sc.VerifyBootstrap(); err != nil {
			return fmt.Errorf("%w: %w", ErrConfig, err)
		}
		return nil
	}
	var targets []*target
	if cfg.OutputDir != "" {
		for _, m := range cl.Members() {
			if err := checkPathName(m.Name); err != nil {
				return nil, nil, err
			}
			if err := verify(m.Name, m.PeerURLs); err != nil {
				return nil, nil, err
			}
			targets = append(targets, &target{member: m, dataDir: filepath.Join(cfg.OutputDir, fmt.Sprintf(defaultDirShape, m.Name))})
		}
		return cl, targets, nil
	}
	if err := verify(cfg.Name, cfg.PeerURLs); err != nil {
		return nil, nil, err
	}
	dataDir := cfg.DataDir
	if dataDir == "" {
		if err := checkPathName(cfg.Name); err != nil {
			return nil, nil, err
		}
		dataDir = fmt.Sprintf(defaultDirShape, cfg.Name)
	}
	t := &target{member: cl.MemberByName(cfg.Name), dataDir: dataDir, walDir: cfg.WALDir}
	if t.walDir != "" && filepath.Clean(t.walDir) == datadir.ToWalDir(filepath.Clean(dataDir)) {
		t.walDir = ""
	}
	return cl, []*target{t}, nil
}

// checkPathName refuses a member name that cannot be one path element of
// <name>.etcd: a name from --initial-cluster must never place a data dir
// outside --output-dir.
func checkPathName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
		return fmt.Errorf("%w: member name %q cannot name a data dir (<name>.etcd): no '/', '.', '..' or empty names", ErrConfig, name)
	}
	return nil
}

// prepare refuses existing targets, removes what an interrupted restore of
// the same target left, and creates the temporary data dir and db file.
func (t *target) prepare() error {
	if err := t.checkTarget(); err != nil {
		return err
	}
	var err error
	if t.tmpData, err = tempDir(t.root()); err != nil {
		return err
	}
	if err := os.MkdirAll(t.snapDir(), dirPerm); err != nil {
		return fmt.Errorf("create %s: %w", t.snapDir(), err)
	}
	if t.walDir != "" {
		if t.tmpWAL, err = tempDir(t.walDir); err != nil {
			return err
		}
	}
	t.db, err = os.OpenFile(t.dbPath(), os.O_RDWR|os.O_CREATE|os.O_EXCL, dbPerm)
	if err != nil {
		return fmt.Errorf("create %s: %w", t.dbPath(), err)
	}
	return nil
}

// checkTarget refuses a data dir that is not empty and a WAL dir that
// exists, and notes whether the data dir exists; it writes nothing.
func (t *target) checkTarget() error {
	if entries, err := os.ReadDir(t.dataDir); err == nil {
		for _, e := range entries {
			// What an interrupted restore into this dir left is not
			// content: TempSibling removes it when its process is gone.
			if !strings.HasPrefix(e.Name(), ".member"+tempMarker) {
				return fmt.Errorf("%w: data dir %s is not empty (restore into a new directory, or remove it first)", ErrTargetExists, t.dataDir)
			}
		}
		t.dataExists = true
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("data dir %s: %w", t.dataDir, err)
	}
	if t.walDir != "" {
		if _, err := os.Lstat(t.walDir); err == nil {
			if !t.dataExists {
				return fmt.Errorf("%w: wal dir %s exists but data dir %s does not (left by an interrupted restore?); remove the wal dir and retry", ErrTargetExists, t.walDir, t.dataDir)
			}
			return fmt.Errorf("%w: wal dir %s exists (remove it first)", ErrTargetExists, t.walDir)
		} else if !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("wal dir %s: %w", t.walDir, err)
		}
	}
	return nil
}

// tempDir creates the temporary sibling in which dir is built.
func tempDir(dir string) (string, error) {
	if err := os.MkdirAll(filepath.Dir(filepath.Clean(dir)), dirPerm); err != nil {
		return "", fmt.Errorf("create %s: %w", filepath.Dir(dir), err)
	}
	tmp, err := fsutil.TempSibling(dir, tempMarker)
	if err != nil {
		return "", err
	}
	if err := os.Mkdir(tmp, dirPerm); err != nil {
		return "", fmt.Errorf("create %s: %w", tmp, err)
	}
	return tmp, nil
}

// syncDirs makes the entries of the temporary data dir durable.
func (t *target) syncDirs() error {
	dirs := []string{t.snapDir(), datadir.ToMemberDir(t.tmpData), t.tmpData}
	if t.walDir != "" {
		dirs = append(dirs, t.tmpWAL)
	}
	for _, d := range dirs {
		if err := fsutil.SyncDir(d); err != nil {
			return err
		}
	}
	return nil
}

// commit renames the finished dirs into place: the WAL dir first, the data
// dir last, so a data dir under its real name is always complete.
func (t *target) commit() error {
	if t.walDir != "" {
		if err := fsutil.RenameSynced(t.tmpWAL, t.walDir); err != nil {
			return err
		}
		phaseHook("wal-renamed")
	}
	if err := fsutil.RenameSynced(t.built(), t.root()); err != nil {
		return err
	}
	if t.dataExists {
		// The emptied container; a crash before this leaves an empty
		// hidden directory, which etcd ignores.
		if err := os.Remove(t.tmpData); err != nil {
			return err
		}
	}
	t.committed = true
	phaseHook("committed")
	return nil
}

// abort removes everything the target wrote under temporary names.
func (t *target) abort() {
	if t.db != nil {
		t.db.Close()
	}
	if t.committed {
		return
	}
	if t.tmpData != "" {
		os.RemoveAll(t.tmpData)
	}
	if t.tmpWAL != "" {
		os.RemoveAll(t.tmpWAL)
	}
}

// builtDirs are a target's temporary data and WAL dirs (after prepare).
func builtDirs(t *target) (string, string) {
	if t.walDir != "" {
		return t.tmpData, t.tmpWAL
	}
	return t.tmpData, t.tmpData
}

// plannedDirs are the nearest existing directories of where a target's
// data and WAL dirs would go: a dry run creates nothing to ask statfs.
func plannedDirs(t *target) (string, string) {
	w := t.walDir
	if w == "" {
		w = t.dataDir
	}
	return existingAncestor(t.dataDir), existingAncestor(w)
}

func existingAncestor(p string) string {
	p, _ = filepath.Abs(p)
	for {
		if _, err := os.Stat(p); err == nil || filepath.Dir(p) == p {
			return p
		}
		p = filepath.Dir(p)
	}
}

// checkSpace refuses to start when the target file systems cannot hold a db
// of size bytes for every target (WAL segments are preallocated to 64 MB).
func checkSpace(targets []*target, size int64, dirs func(*target) (data, wal string)) error {
	type fsNeed struct {
		dir         string
		need, avail int64
	}
	byFS := map[[2]int32]*fsNeed{}
	add := func(dir string, n int64) error {
		free, err := fsutil.Free(dir)
		if err != nil {
			return err
		}
		f := byFS[free.FS]
		if f == nil {
			f = &fsNeed{dir: dir, avail: free.Bytes}
			byFS[free.FS] = f
		}
		f.need += n
		return nil
	}
	for _, t := range targets {
		dataFS, walFS := dirs(t)
		if err := add(dataFS, size); err != nil {
			return err
		}
		if err := add(walFS, wal.SegmentSizeBytes); err != nil {
			return err
		}
	}
	for _, f := range byFS {
		if f.avail < f.need {
			return fmt.Errorf("%w: %s has %s free, the restore needs %s", ErrNoSpace, filepath.Dir(f.dir), fsutil.MiB(f.avail), fsutil.MiB(f.need))
		}
	}
	return nil
}
