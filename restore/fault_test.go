package restore_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/etcdkit/etcdkit/internal/boltpage"
	"github.com/etcdkit/etcdkit/internal/testetcd"
	"github.com/etcdkit/etcdkit/restore"
	"github.com/etcdkit/etcdkit/snapshot"
)

// The 3.7 snapshot shared by the fault tests.
var (
	faultOnce sync.Once
	faultSrc  source
	faultRaw  string // a member's db copied from its stopped data dir
	faultDir  string // holds both; removed by TestMain
)

func faultSource(t *testing.T) source {
	faultOnce.Do(func() {
		p, loaded := testetcd.LoadedProcess(t, "3.7", testetcd.SmallSpec)
		cli := testetcd.NewClient(t, p.ClientURL)
		dir, err := os.MkdirTemp("", "etcdkit-fault-")
		if err != nil {
			t.Fatal(err)
		}
		faultDir = dir
		faultSrc.path = filepath.Join(dir, "snap.db")
		testetcd.Run(t, p.Bins.Etcdctl, "--endpoints", p.ClientURL, "snapshot", "save", faultSrc.path)
		hk, err := cli.HashKV(testetcd.Ctx(t, 30*time.Second), p.ClientURL, loaded.Revision)
		if err != nil {
			t.Fatal(err)
		}
		faultSrc.line, faultSrc.revision, faultSrc.hashKV = "3.7", loaded.Revision, hk.Hash
		faultSrc.state = testetcd.ReadState(t, cli, loaded.Revision)
		p.Stop()
		faultRaw = filepath.Join(dir, "raw.db")
		testetcd.CopyFile(t, p.DBPath(), faultRaw)
	})
	if faultSrc.path == "" {
		t.Fatal("fault source not prepared")
	}
	return faultSrc
}

func singleConfig(dir string) restore.Config {
	return restore.Config{
		Name: "default", PeerURLs: []string{restore.DefaultPeerURL},
		InitialCluster: "default=" + restore.DefaultPeerURL, InitialClusterToken: restore.DefaultToken,
		DataDir: filepath.Join(dir, "out.etcd"),
	}
}

// TestRestoreRefuses covers bad input and bad targets: each fails with its
// own error, leaves the input unchanged and writes nothing under a real
// name (the parent directory holds exactly what it held before).
// setup is what a refusal case starts from: a directory, the snapshot to
// restore and the configuration.
type setup struct {
	dir, snap string
	cfg       restore.Config
}

func TestRestoreRefuses(t *testing.T) {
	src := faultSource(t)
	damaged := func(t *testing.T, dir string, edit func([]byte) []byte) string {
		b, err := os.ReadFile(src.path)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, "damaged.db")
		if err := os.WriteFile(p, edit(b), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cases := []struct {
		name    string
		prepare func(t *testing.T, s *setup)
		want    error
		msg     string
	}{
		{"no trailer", func(t *testing.T, s *setup) { s.snap = faultRaw }, restore.ErrNoTrailer, "--skip-hash-check"},
		{"hash mismatch", func(t *testing.T, s *setup) {
			s.snap = damaged(t, s.dir, func(b []byte) []byte { b[len(b)/2] ^= 0x40; return b })
		}, restore.ErrHashMismatch, "expected "},
		{"truncated", func(t *testing.T, s *setup) {
			s.snap = damaged(t, s.dir, func(b []byte) []byte { return b[:len(b)/2+100] })
		}, boltpage.ErrDamaged, "truncated"},
		{"truncated at a page boundary", func(t *testing.T, s *setup) {
			s.snap = damaged(t, s.dir, func(b []byte) []byte { return append(b[:len(b)/2/4096*4096], b[len(b)-32:]...) })
		}, boltpage.ErrDamaged, "truncated"},
		{"truncated without hash check", func(t *testing.T, s *setup) {
			s.snap = damaged(t, s.dir, func(b []byte) []byte { return b[:len(b)/2] })
			s.cfg.SkipHashCheck = true
		}, boltpage.ErrDamaged, "truncated"},
		{"not a bolt file", func(t *testing.T, s *setup) {
			s.snap = damaged(t, s.dir, func(b []byte) []byte { return []byte(strings.Repeat("not a db\n", 1000)) })
		}, boltpage.ErrNotBolt, ""},
		{"missing file", func(t *testing.T, s *setup) { s.snap = filepath.Join(s.dir, "nope.db") }, os.ErrNotExist, ""},
		{"freelist names a meta page, trailer valid", func(t *testing.T, s *setup) {
			// bbolt panicked on it ("invalid freelist page: 1, page type is
			// meta") and left the temporary dir behind.
			s.snap = damaged(t, s.dir, func(b []byte) []byte {
				db := b[:len(b)-32]
				ps := int64(binary.LittleEndian.Uint32(db[16+8:]))
				for _, off := range []int64{0, ps} {
					m := db[off+16 : off+16+64]
					binary.LittleEndian.PutUint64(m[32:], 1) // freelist: meta page 1
					h := fnv.New64a()
					h.Write(m[:56])
					binary.LittleEndian.PutUint64(m[56:], h.Sum64())
				}
				sum := sha256.Sum256(db)
				return append(db, sum[:]...)
			})
		}, boltpage.ErrIntegrity, "out of bounds"},
		{"data dir not empty", func(t *testing.T, s *setup) {
			os.MkdirAll(filepath.Join(s.cfg.DataDir, "member"), 0o700)
		}, restore.ErrTargetExists, "not empty"},
		{"wal dir exists", func(t *testing.T, s *setup) {
			s.cfg.WALDir = filepath.Join(s.dir, "wal")
			os.MkdirAll(s.cfg.WALDir, 0o700)
		}, restore.ErrTargetExists, "wal dir"},
		{"name not in cluster", func(t *testing.T, s *setup) { s.cfg.Name = "other" }, restore.ErrConfig, "other"},
		{"bump without mark-compacted", func(t *testing.T, s *setup) { s.cfg.BumpRevision = 5 }, restore.ErrConfig, "--mark-compacted"},
		{"member name that climbs out of the output dir", func(t *testing.T, s *setup) {
			s.cfg.OutputDir = filepath.Join(s.dir, "all")
			s.cfg.InitialCluster = "../../evil=http://127.0.0.1:1,b=http://127.0.0.1:2"
		}, restore.ErrConfig, "cannot name a data dir"},
		{"member name with a slash", func(t *testing.T, s *setup) {
			s.cfg.OutputDir = filepath.Join(s.dir, "all")
			s.cfg.InitialCluster = "a/b=http://127.0.0.1:1"
		}, restore.ErrConfig, "cannot name a data dir"},
		{"duplicate peer url", func(t *testing.T, s *setup) {
			s.cfg.OutputDir = filepath.Join(s.dir, "all")
			s.cfg.InitialCluster = "a=http://127.0.0.1:1,b=http://127.0.0.1:1"
		}, restore.ErrConfig, "duplicate"},
	}
	// A dry run makes the same checks and refuses with the same errors.
	for _, run := range []struct {
		name string
		fn   func(context.Context, restore.Config, string) (restore.Result, error)
	}{{"restore", restore.Restore}, {"dry-run", restore.DryRun}} {
		for _, tc := range cases {
			t.Run(run.name+"/"+tc.name, func(t *testing.T) {
				refused(t, run.fn, src, tc.prepare, tc.want, tc.msg)
			})
		}
	}
}

// refused runs fn on the setup prepare makes and checks its error, that
// the directory holds what it held and the input is unchanged.
func refused(t *testing.T, fn func(context.Context, restore.Config, string) (restore.Result, error), src source, prepare func(*testing.T, *setup), want error, msg string) {
	t.Helper()
	dir := t.TempDir()
	s := &setup{dir: dir, snap: src.path, cfg: singleConfig(dir)}
	prepare(t, s)
	before := testetcd.DirNames(t, dir)
	var sum [32]byte
	if _, err := os.Stat(s.snap); err == nil {
		sum = testetcd.FileSum(t, s.snap)
	}
	_, err := fn(context.Background(), s.cfg, s.snap)
	if !errors.Is(err, want) || !strings.Contains(fmt.Sprint(err), msg) {
		t.Fatalf("error %v, want %v mentioning %q", err, want, msg)
	}
	if after := testetcd.DirNames(t, dir); strings.Join(after, ",") != strings.Join(before, ",") {
		t.Errorf("directory now holds %v, before %v", after, before)
	}
	if _, err := os.Stat(s.snap); err == nil && testetcd.FileSum(t, s.snap) != sum {
		t.Error("the input changed")
	}
}

// TestDryRun: a dry run returns what the restore then returns (cluster and
// member IDs, dirs, revision with a bump, size, sha256) for one member and
// for three, and writes nothing.
func TestDryRun(t *testing.T) {
	src := faultSource(t)
	for _, tc := range []struct {
		name string
		cfg  func(dir string) restore.Config
	}{
		{"one member", singleConfig},
		{"three members, bumped", func(dir string) restore.Config {
			return restore.Config{OutputDir: filepath.Join(dir, "all"), InitialCluster: "a=http://127.0.0.1:1,b=http://127.0.0.1:2,c=http://127.0.0.1:3",
				InitialClusterToken: "tok", BumpRevision: 1000, MarkCompacted: true}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg := tc.cfg(dir)
			dry, err := restore.DryRun(context.Background(), cfg, src.path)
			if err != nil {
				t.Fatal(err)
			}
			if left := testetcd.DirNames(t, dir); len(left) != 0 {
				t.Fatalf("a dry run wrote %v", left)
			}
			real, err := restore.Restore(context.Background(), cfg, src.path)
			if err != nil {
				t.Fatal(err)
			}
			if !dry.DryRun || real.DryRun {
				t.Errorf("DryRun marks: dry %v, real %v", dry.DryRun, real.DryRun)
			}
			dry.DryRun = false
			if fmt.Sprintf("%+v", dry) != fmt.Sprintf("%+v", real) {
				t.Fatalf("dry run %+v\nrestore %+v", dry, real)
			}
		})
	}
}

// TestRestorePanicCleansUp: a panic in the middle of a restore (a bug)
// removes what the restore wrote while it unwinds, like an error does.
// TestNoTrailerRefusedFirst: a file whose length shows no trailer is
// refused before any byte of it is copied.
func TestNoTrailerRefusedFirst(t *testing.T) {
	faultSource(t)
	var phases []string
	restore.SetPhaseHook(func(p string) { phases = append(phases, p) })
	defer restore.SetPhaseHook(func(string) {})
	_, err := restore.Restore(context.Background(), singleConfig(t.TempDir()), faultRaw)
	if !errors.Is(err, restore.ErrNoTrailer) || len(phases) != 0 {
		t.Fatalf("got %v after the phases %v, want %v before any", err, phases, restore.ErrNoTrailer)
	}
}

func TestRestorePanicCleansUp(t *testing.T) {
	src := faultSource(t)
	for _, phase := range []string{"copied", "db-finished", "wal-written", "synced"} {
		t.Run(phase, func(t *testing.T) {
			dir := t.TempDir()
			restore.SetPhaseHook(func(p string) {
				if p == phase {
					panic("injected at " + p)
				}
			})
			defer restore.SetPhaseHook(func(string) {})
			func() {
				defer func() {
					if r := recover(); r == nil {
						t.Fatal("no panic")
					}
				}()
				restore.Restore(context.Background(), singleConfig(dir), src.path)
			}()
			if left := testetcd.DirNames(t, dir); len(left) != 0 {
				t.Fatalf("left after a panic at %s: %v", phase, left)
			}
		})
	}
}

// TestRestoreIntoExistingAndLongNames: an existing empty data dir (the
// /var/lib/etcd mount point of the runbook) is restored into, as etcdutl
// does, and so are data dirs whose names are close to the 255-byte limit,
// where a temporary sibling's name must be cut to fit.
func TestRestoreIntoExistingAndLongNames(t *testing.T) {
	src := faultSource(t)
	for _, tc := range []struct {
		name     string
		dataDir  func(dir string) string
		preexist bool
	}{
		{"existing empty data dir", func(dir string) string { return filepath.Join(dir, "var-lib-etcd") }, true},
		{"233-byte name", func(dir string) string { return filepath.Join(dir, strings.Repeat("d", 233)) }, false},
		{"255-byte name", func(dir string) string { return filepath.Join(dir, strings.Repeat("n", 255)) }, false},
		{"255-byte name, existing", func(dir string) string { return filepath.Join(dir, strings.Repeat("e", 255)) }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg := singleConfig(dir)
			cfg.DataDir = tc.dataDir(dir)
			if tc.preexist {
				if err := os.Mkdir(cfg.DataDir, 0o700); err != nil {
					t.Fatal(err)
				}
			}
			res, err := restore.Restore(context.Background(), cfg, src.path)
			if err != nil {
				t.Fatal(err)
			}
			st, err := snapshot.ReadStatus(filepath.Join(cfg.DataDir, "member", "snap", "db"), time.Second)
			if err != nil || st.Revision != res.Revision {
				t.Fatalf("restored db: %+v %v, want revision %d", st, err, res.Revision)
			}
			names := testetcd.DirNames(t, dir)
			for _, n := range names {
				if strings.Contains(n, "etcdkit-restore") {
					t.Fatalf("temporary left: %v", names)
				}
			}
			if entries := testetcd.Must(os.ReadDir(cfg.DataDir))(t); len(entries) != 1 || entries[0].Name() != "member" {
				t.Fatalf("data dir holds %v, want only member", entries)
			}
		})
	}
}

// TestRestoreNoSpace: a source larger than the free space is refused before
// anything is written.
func TestRestoreNoSpace(t *testing.T) {
	src := faultSource(t)
	dir := t.TempDir()
	f, err := os.Open(src.path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	_, err = restore.RestoreFrom(context.Background(), singleConfig(dir), f, src.path, 1<<60)
	if !errors.Is(err, restore.ErrNoSpace) {
		t.Fatalf("error %v, want ErrNoSpace", err)
	}
	if e := testetcd.DirNames(t, dir); len(e) != 0 {
		t.Errorf("left %v", e)
	}

	// A dry run measures the same: an 8 TiB sparse copy of the snapshot.
	huge := filepath.Join(t.TempDir(), "huge.db")
	testetcd.CopyFile(t, src.path, huge)
	if err := os.Truncate(huge, 1<<43); err != nil {
		t.Fatal(err)
	}
	if _, err := restore.DryRun(context.Background(), singleConfig(dir), huge); !errors.Is(err, restore.ErrNoSpace) {
		t.Fatalf("dry run: error %v, want ErrNoSpace", err)
	}
	if e := testetcd.DirNames(t, dir); len(e) != 0 {
		t.Errorf("the dry run left %v", e)
	}
}

// TestRestoreRawDB restores a member's db copied from a stopped data dir
// (no trailer, two different meta pages) with SkipHashCheck, as etcdutl
// does, and boots it.
func TestRestoreRawDB(t *testing.T) {
	src := faultSource(t)
	ps, ic := peers(t, "raw")
	dir := t.TempDir()
	cfg := restore.Config{Name: "raw", PeerURLs: []string{ps[0].peerURL()}, InitialCluster: ic, InitialClusterToken: "tok",
		DataDir: filepath.Join(dir, "raw.etcd"), SkipHashCheck: true}
	res, err := restore.Restore(context.Background(), cfg, faultRaw)
	if err != nil {
		t.Fatal(err)
	}
	if res.SHA256 != "" {
		t.Errorf("hash reported as checked: %s", res.SHA256)
	}
	ref := filepath.Join(dir, "ref.etcd")
	testetcd.Run(t, testetcd.Binaries(t, "3.7").Etcdutl, "snapshot", "restore", faultRaw, "--skip-hash-check",
		"--name", "raw", "--initial-cluster", ic, "--initial-advertise-peer-urls", ps[0].peerURL(),
		"--initial-cluster-token", "tok", "--data-dir", ref)
	ours, err := snapshot.ReadStatus(filepath.Join(cfg.DataDir, "member", "snap", "db"), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	theirs, err := snapshot.ReadStatus(filepath.Join(ref, "member", "snap", "db"), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if ours.Hash != theirs.Hash {
		t.Errorf("db status %+v, etcdutl's %+v", ours, theirs)
	}
	boot(t, src, ps, ic, "tok", func(peer) string { return cfg.DataDir }, res)
}

// childSpec is a restore run in a child process, so the test can kill it.
type childSpec struct {
	Snapshot  string
	DataDir   string
	WALDir    string
	OutputDir string
	PauseAt   string // a phase name, or "half" for the middle of the copy
	FileLimit uint64 // RLIMIT_FSIZE, to fail writes as a full disk does
}

const childEnv = "ETCDKIT_TEST_RESTORE_CHILD"

// runChild is the child's side: restore as told, printing each phase and
// sleeping at PauseAt until killed.
func runChild(spec string) int {
	var cs childSpec
	if err := json.Unmarshal([]byte(spec), &cs); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	phase := func(p string) {
		fmt.Println(p)
		if p == cs.PauseAt {
			time.Sleep(time.Hour)
		}
	}
	restore.SetPhaseHook(phase)
	if cs.FileLimit > 0 {
		if err := testetcd.LimitFileSize(cs.FileLimit); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
	}
	cfg := singleConfig("")
	cfg.DataDir, cfg.WALDir = cs.DataDir, cs.WALDir
	if cs.OutputDir != "" {
		cfg = restore.Config{OutputDir: cs.OutputDir, InitialCluster: "a=http://127.0.0.1:1,b=http://127.0.0.1:2,c=http://127.0.0.1:3", InitialClusterToken: "tok"}
	}
	fi, err := os.Stat(cs.Snapshot)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	half := false
	cfg.Progress = func(done, _ int64) {
		if !half && done >= fi.Size()/2 {
			half = true
			phase("half")
		}
	}
	if _, err := restore.Restore(context.Background(), cfg, cs.Snapshot); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// startChild runs a child restore and returns when it has printed the
// phase pauseAt (or has exited).
func startChild(t *testing.T, cs childSpec) (*exec.Cmd, *strings.Builder) {
	t.Helper()
	cmd, out, stderr := testetcd.StartChild(t, childEnv, cs)
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if sc.Text() == cs.PauseAt {
			return cmd, stderr
		}
	}
	return cmd, stderr
}

// TestRestoreKilled kills a restore with SIGKILL at every step — before the
// copy, in the middle of it, after it, after the db edit, after the WAL,
// after syncing, between the WAL dir's and the data dir's rename, and after
// the last rename — and checks that each target then either does not exist
// or is complete, and that restoring again works.
func TestRestoreKilled(t *testing.T) {
	src := faultSource(t)
	// The complete result, to compare a surviving data dir with.
	refDir := t.TempDir()
	if _, err := restore.Restore(context.Background(), singleConfig(refDir), src.path); err != nil {
		t.Fatal(err)
	}
	ref, err := snapshot.ReadStatus(filepath.Join(refDir, "out.etcd", "member", "snap", "db"), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	complete := func(t *testing.T, dataDir, walDir string) {
		t.Helper()
		st, err := snapshot.ReadStatus(filepath.Join(dataDir, "member", "snap", "db"), time.Second)
		if err != nil || st.Hash != ref.Hash {
			t.Fatalf("%s is there but not complete: %+v %v", dataDir, st, err)
		}
		if walDir == "" {
			walDir = filepath.Join(dataDir, "member", "wal")
		}
		for _, f := range []string{filepath.Join(walDir, "0000000000000000-0000000000000000.wal"),
			filepath.Join(dataDir, "member", "snap", "0000000000000001-0000000000000001.snap")} {
			if _, err := os.Stat(f); err != nil {
				t.Fatalf("incomplete: %v", err)
			}
		}
	}
	phases := []string{"copy", "half", "copied", "db-finished", "wal-written", "synced", "wal-renamed", "committed"}
	for _, sepWAL := range []bool{false, true} {
		for _, phase := range phases {
			if phase == "wal-renamed" && !sepWAL {
				continue
			}
			t.Run(fmt.Sprintf("wal-dir=%v/%s", sepWAL, phase), func(t *testing.T) {
				dir := t.TempDir()
				cs := childSpec{Snapshot: src.path, DataDir: filepath.Join(dir, "out.etcd"), PauseAt: phase}
				if sepWAL {
					cs.WALDir = filepath.Join(dir, "wal")
				}
				cmd, stderr := startChild(t, cs)
				cmd.Process.Kill()
				cmd.Wait()
				_, dataErr := os.Stat(cs.DataDir)
				_, walErr := os.Stat(cs.WALDir)
				switch {
				case dataErr == nil:
					complete(t, cs.DataDir, cs.WALDir)
					if phase != "committed" {
						t.Errorf("data dir under its real name after a kill at %q", phase)
					}
				case phase == "committed":
					t.Fatalf("killed after the commit but no data dir: %v %s", dataErr, stderr)
				case sepWAL && walErr == nil:
					// Killed between the two renames: the data dir, which
					// etcd needs, is absent; a retry says what to remove.
					if phase != "wal-renamed" {
						t.Errorf("wal dir under its real name after a kill at %q", phase)
					}
					_, err := restore.Restore(context.Background(), restoreCfg(cs), src.path)
					if !errors.Is(err, restore.ErrTargetExists) || !strings.Contains(err.Error(), "interrupted") {
						t.Fatalf("retry: %v", err)
					}
					os.RemoveAll(cs.WALDir)
					fallthrough
				default:
					// Nothing under a real name; a retry cleans the
					// leftovers of the killed run and succeeds.
					if _, err := restore.Restore(context.Background(), restoreCfg(cs), src.path); err != nil {
						t.Fatalf("retry after kill at %q: %v", phase, err)
					}
					complete(t, cs.DataDir, cs.WALDir)
					want := []string{"out.etcd"}
					if sepWAL {
						want = []string{"out.etcd", "wal"}
					}
					if got := testetcd.DirNames(t, dir); strings.Join(got, ",") != strings.Join(want, ",") {
						t.Errorf("after the retry the directory holds %v, want %v", got, want)
					}
				}
			})
		}
	}
}

func restoreCfg(cs childSpec) restore.Config {
	cfg := singleConfig("")
	cfg.DataDir, cfg.WALDir = cs.DataDir, cs.WALDir
	return cfg
}

// TestRestoreDiskFull fails the copy's writes part way, as a full disk
// does (RLIMIT_FSIZE in a child process), for one member and for three:
// the restore reports the write error and leaves nothing behind.
func TestRestoreDiskFull(t *testing.T) {
	src := faultSource(t)
	for _, all := range []bool{false, true} {
		t.Run(fmt.Sprintf("output-dir=%v", all), func(t *testing.T) {
			dir := t.TempDir()
			cs := childSpec{Snapshot: src.path, DataDir: filepath.Join(dir, "out.etcd"), FileLimit: 4 << 20}
			if all {
				cs = childSpec{Snapshot: src.path, OutputDir: dir, FileLimit: 4 << 20}
			}
			cmd, stderr := startChild(t, cs)
			err := cmd.Wait()
			if err == nil || !strings.Contains(stderr.String(), "file too large") {
				t.Fatalf("exit %v, stderr %q; want a write error", err, stderr)
			}
			if e := testetcd.DirNames(t, dir); len(e) != 0 {
				t.Errorf("left %v", e)
			}
		})
	}
}

// fromStream restores the snapshot at path as a backup's stream is
// restored: read once, through a reader that is not a file.
func fromStream(ctx context.Context, cfg restore.Config, path string) (restore.Result, error) {
	f, err := os.Open(path)
	if err != nil {
		return restore.Result{}, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return restore.Result{}, err
	}
	return restore.RestoreFrom(ctx, cfg, struct{ io.Reader }{f}, path, fi.Size())
}

// withTrailer returns db with etcd's sha256 trailer.
func withTrailer(db []byte) []byte {
	sum := sha256.Sum256(db)
	return append(db, sum[:]...)
}

// TestRestoreFromStream: a stream is checked as it passes. An etcd
// snapshot is proven by the stream alone (no copy is read again); damage
// the sha256 trailer vouches for is still refused (the copy's check finds
// it); and a db the stream cannot prove but bolt's checks pass (a nested
// bucket) is restored after the copy's check.
func TestRestoreFromStream(t *testing.T) {
	src := faultSource(t)
	var phases []string
	restore.SetPhaseHook(func(p string) { phases = append(phases, p) })
	defer restore.SetPhaseHook(func(string) {})
	checkedCopy := func() bool { return slices.Contains(phases, "check-copy") }

	t.Run("etcd snapshot", func(t *testing.T) {
		phases = nil
		res, err := fromStream(context.Background(), singleConfig(t.TempDir()), src.path)
		if err != nil {
			t.Fatal(err)
		}
		if res.Revision != src.revision || res.SHA256 == "" {
			t.Errorf("result %+v, want revision %d and a checked hash", res, src.revision)
		}
		if checkedCopy() {
			t.Error("the copy was checked: the stream did not prove an etcd snapshot")
		}
	})

	t.Run("key order damaged under a valid trailer", func(t *testing.T) {
		phases = nil
		refused(t, fromStream, src, func(t *testing.T, s *setup) {
			b, err := os.ReadFile(src.path)
			if err != nil {
				t.Fatal(err)
			}
			db := b[:len(b)-32]
			ps := int(binary.LittleEndian.Uint32(db[16+8:]))
			// The first key of every leaf of revisions goes above the rest.
			for off := 2 * ps; off+ps <= len(db); off += ps {
				if binary.LittleEndian.Uint64(db[off:]) != uint64(off/ps) || binary.LittleEndian.Uint16(db[off+8:]) != 0x02 || binary.LittleEndian.Uint16(db[off+10:]) < 2 {
					continue
				}
				e := off + 16
				pos, ksize := int(binary.LittleEndian.Uint32(db[e+4:])), binary.LittleEndian.Uint32(db[e+8:])
				if ksize == 17 {
					db[e+pos] = 0xff
				}
			}
			s.snap = filepath.Join(s.dir, "damaged.db")
			if err := os.WriteFile(s.snap, withTrailer(db), 0o600); err != nil {
				t.Fatal(err)
			}
		}, boltpage.ErrIntegrity, "is not above the previous key")
		if !checkedCopy() {
			t.Error("refused without checking the copy")
		}
	})

	t.Run("nested bucket", func(t *testing.T) {
		phases = nil
		dir := t.TempDir()
		db := filepath.Join(dir, "nested.db")
		testetcd.CopyFile(t, faultRaw, db)
		b, err := bolt.Open(db, 0o600, nil)
		if err != nil {
			t.Fatal(err)
		}
		var snap bytes.Buffer
		err = b.Update(func(tx *bolt.Tx) error {
			_, err := tx.Bucket([]byte("meta")).CreateBucket([]byte("nested"))
			return err
		})
		if err == nil {
			err = b.View(func(tx *bolt.Tx) error { _, err := tx.WriteTo(&snap); return err })
		}
		if cerr := b.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, "nested-snapshot.db")
		if err := os.WriteFile(path, withTrailer(snap.Bytes()), 0o600); err != nil {
			t.Fatal(err)
		}
		res, err := fromStream(context.Background(), singleConfig(dir), path)
		if err != nil {
			t.Fatal(err)
		}
		if res.Revision != src.revision {
			t.Errorf("revision %d, want %d", res.Revision, src.revision)
		}
		if !checkedCopy() {
			t.Error("the stream proved a db with a nested bucket, which its proof does not cover")
		}
	})
}
