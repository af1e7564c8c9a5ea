package main

import (
	"bytes"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/urfave/cli/v2"
	bolt "go.etcd.io/bbolt"

	"github.com/etcdkit/etcdkit/internal/boltpage"
	"github.com/etcdkit/etcdkit/internal/testetcd"
)

// TestDamagedDBEveryCommand: every offline command meets each kind of
// damaged db with its documented exit code and one line on stderr, never
// a crash, a hang or an unbounded allocation; a restore installs nothing
// and a defrag leaves the file as it was. A cyclic page reference made
// verify grow past 9 GB, hashkv run out of memory, defrag overflow its
// stack and restore install the db: bbolt now reads only what the pread
// scanner passed.
func TestDamagedDBEveryCommand(t *testing.T) {
	m := testetcd.StartSingle(t)
	if _, err := testetcd.Load(testetcd.Ctx(t, time.Minute), m.Client(t), testetcd.LoadSpec{Keys: 300, Rounds: 2, Seed: 13}); err != nil {
		t.Fatal(err)
	}
	m.Stop()
	dir := t.TempDir()
	clean := testetcd.Must(os.ReadFile(m.DBPath()))(t)
	le := binary.LittleEndian
	ps, root := keyBucketRoot(t, clean)
	if le.Uint16(clean[root*ps+8:])&0x01 == 0 {
		t.Fatal("the key bucket's root is not a branch page: load more keys")
	}
	firstLeaf := le.Uint64(clean[root*ps+16+8:])
	noEtcd := filepath.Join(dir, "plain-bolt.db")
	func() {
		db := testetcd.Must(bolt.Open(noEtcd, 0o600, nil))(t)
		defer db.Close()
		if err := db.Update(func(tx *bolt.Tx) error {
			b, err := tx.CreateBucket([]byte("other"))
			if err != nil {
				return err
			}
			return b.Put([]byte("a"), []byte("b"))
		}); err != nil {
			t.Fatal(err)
		}
	}()

	damages := []struct {
		name string
		file func() string
		code int
		want string
	}{
		{"cyclic page reference", func() string {
			b := bytes.Clone(clean)
			le.PutUint64(b[root*ps+16+8:], root) // the root's first child is the root
			return write(t, dir, "cyclic.db", b)
		}, exitCorrupt, "multiple references"},
		{"truncated to one page", func() string { return write(t, dir, "page.db", clean[:4096]) }, exitCorrupt, ""},
		{"entry marked as a bucket", func() string {
			b := bytes.Clone(clean)
			le.PutUint32(b[firstLeaf*ps+16:], 1) // first element's flags: bucket
			return write(t, dir, "bucket-entry.db", b)
		}, exitCorrupt, ""},
		{"no etcd buckets", func() string { return noEtcd }, exitInput, "not an etcd"},
	}
	for _, d := range damages {
		for _, cmd := range []struct {
			name string
			args func(file, out string) []string
		}{
			{"snapshot status", func(f, _ string) []string { return []string{"snapshot", "status", f} }},
			{"hashkv", func(f, _ string) []string { return []string{"hashkv", f} }},
			{"verify snapshot", func(f, _ string) []string { return []string{"verify", "snapshot", f} }},
			{"defrag", func(f, _ string) []string { return []string{"defrag", "--db", f} }},
			{"snapshot restore", func(f, out string) []string {
				return []string{"snapshot", "restore", f, "--skip-hash-check", "--data-dir", out}
			}},
			{"inspect get", func(f, _ string) []string { return []string{"inspect", "get", "", "--prefix", "--db", f} }},
			{"inspect history", func(f, _ string) []string { return []string{"inspect", "history", "", "--prefix", "--db", f} }},
			{"inspect leases", func(f, _ string) []string { return []string{"inspect", "leases", "--db", f} }},
			{"inspect members", func(f, _ string) []string { return []string{"inspect", "members", "--db", f} }},
			{"inspect auth", func(f, _ string) []string { return []string{"inspect", "auth", "--db", f} }},
			{"inspect du", func(f, _ string) []string { return []string{"inspect", "du", "--db", f} }},
		} {
			t.Run(d.name+"/"+cmd.name, func(t *testing.T) {
				f := filepath.Join(t.TempDir(), "input.db")
				testetcd.CopyFile(t, d.file(), f)
				sum := testetcd.FileSum(t, f)
				out := filepath.Join(t.TempDir(), "restored.etcd")
				stdout, stderr, code := runCLI(cmd.args(f, out)...)
				said := stderr
				if cmd.name == "verify snapshot" {
					said += stdout // verify's report is on stdout, its verdict on stderr
				}
				if code != d.code || strings.Count(stderr, "\n") != 1 || !strings.Contains(said, d.want) || !strings.Contains(stderr, "input.db") {
					t.Fatalf("exit %d (want %d), stderr %q (want one line naming the file and %q), stdout %q", code, d.code, stderr, d.want, stdout)
				}
				if testetcd.FileSum(t, f) != sum {
					t.Error("the input changed")
				}
				if _, err := os.Stat(out); !os.IsNotExist(err) {
					t.Errorf("restore left %s: %v", out, err)
				}
				for _, n := range testetcd.DirNames(t, filepath.Dir(out)) {
					t.Errorf("left beside the target: %s", n)
				}
			})
		}
	}
}

func write(t *testing.T, dir, name string, b []byte) string {
	p := filepath.Join(dir, name)
	testetcd.WriteFile(t, p, b)
	return p
}

// keyBucketRoot finds the root page of the "key" bucket in a bolt file
// whose root page is a leaf (as in etcd's dbs, with ten buckets).
func keyBucketRoot(t *testing.T, b []byte) (ps, root uint64) {
	t.Helper()
	m := testetcd.Must(boltpage.ReadMeta(bytes.NewReader(b)))(t)
	ps = uint64(m.PageSize)
	le := binary.LittleEndian
	p := b[m.Root*ps:]
	if le.Uint16(p[8:])&0x02 == 0 {
		t.Fatal("the root page is not a leaf")
	}
	for i := range int(le.Uint16(p[10:])) {
		e := p[16+16*i:]
		pos, ksize, vsize := le.Uint32(e[4:]), le.Uint32(e[8:]), le.Uint32(e[12:])
		if string(e[pos:pos+ksize]) == "key" {
			return ps, le.Uint64(e[pos+ksize : pos+ksize+vsize])
		}
	}
	t.Fatal("no key bucket")
	return 0, 0
}

// TestUnreadableIsNotCorrupt: a db this user cannot read is an access
// error (exit 3, "permission denied"), never reported as corrupt. The
// command runs as nobody (the tests run as root, who reads everything).
func TestUnreadableIsNotCorrupt(t *testing.T) {
	if os.Getuid() != 0 {
		t.Fatal("this test drops to nobody and needs root to do so")
	}
	// A copy of the test binary that nobody may run, outside go's 0700
	// build directory.
	binDir := testetcd.Must(os.MkdirTemp("", "etcdkit-nobody-"))(t)
	t.Cleanup(func() { os.RemoveAll(binDir) })
	if err := os.Chmod(binDir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(binDir, "etcdkit")
	testetcd.CopyFile(t, os.Args[0], bin)
	if err := os.Chmod(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	m := testetcd.StartSingle(t)
	m.Stop()
	db := filepath.Join(binDir, "secret.db")
	testetcd.CopyFile(t, m.DBPath(), db)
	if err := os.Chmod(db, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"verify", "snapshot", db}, {"snapshot", "status", db}, {"hashkv", db}} {
		cmd := exec.Command(bin, args...)
		cmd.Env = append(os.Environ(), cliEnv+"=1")
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		code := cmd.ProcessState.ExitCode()
		if err != nil && code < 0 {
			t.Fatalf("%q: %v", args, err)
		}
		if code != exitInput || !strings.Contains(stderr.String(), "permission denied") || strings.Contains(stdout.String()+stderr.String(), "CORRUPT") {
			t.Errorf("%q as nobody: exit %d (want %d), stdout %q, stderr %q", args, code, exitInput, stdout.String(), stderr.String())
		}
	}
}

// TestNegativeNumbersRefused: a negative count, size, revision or duration
// is a usage error (exit 2, one line naming the flag) whether it comes as
// a flag, an ETCDKIT_* variable or a key of the YAML file, and --check
// applies the same rule as the command.
func TestNegativeNumbersRefused(t *testing.T) {
	dir := t.TempDir()
	yaml := filepath.Join(dir, "scheduler.yaml")
	testetcd.WriteFile(t, yaml, []byte("keep-daily: -2\nkeep-last: 2\n"))
	dead := "--endpoints=127.0.0.1:1"
	for _, tc := range []struct {
		name string
		env  []string
		args []string
		flag string
	}{
		{"prune --keep-last", nil, []string{"backup", "prune", "--repo", dir, "--keep-last", "-1"}, "keep-last"},
		{"prune --keep-within", nil, []string{"backup", "prune", "--repo", dir, "--keep-within", "-1h"}, "keep-within"},
		{"hashkv --rev", nil, []string{"hashkv", "--rev", "-1", dir}, "rev"},
		{"global --timeout", nil, []string{"--timeout", "-1s", "snapshot", "status", dir}, "timeout"},
		{"scheduler flag", nil, []string{"scheduler", "--check", dead, "--keep-last", "-1"}, "keep-last"},
		{"scheduler variable", []string{"ETCDKIT_SESSION_TTL", "-5"}, []string{"scheduler", "--check", dead}, "session-ttl"},
		{"scheduler YAML", nil, []string{"scheduler", "--check", dead, "--config", yaml}, "keep-daily"},
		{"serve variable", []string{"ETCDKIT_RETRIES", "-1"}, []string{"serve", "--data-dir", filepath.Join(dir, "d")}, "retries"},
		{"status --quota", nil, []string{"status", dead, "--quota", "-1"}, "quota"},
		{"compact --keep-revisions", nil, []string{"compact", dead, "--keep-revisions", "-3"}, "keep-revisions"},
		{"restore --bump-revision past 2^62", nil, []string{"snapshot", "restore", dir, "--bump-revision", "9223372036854775807", "--mark-compacted", "--data-dir", filepath.Join(dir, "r")}, "bump-revision"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for i := 0; i+1 < len(tc.env); i += 2 {
				t.Setenv(tc.env[i], tc.env[i+1])
			}
			expectFailure(t, tc.args, exitUsage, "--"+tc.flag)
		})
	}
}

// TestPanicIsOneLine: a panic left in any command ends in one line on
// stderr and exit 1, never a Go stack trace.
func TestPanicIsOneLine(t *testing.T) {
	orig := beforeAction
	beforeAction = func(*cli.Context) { panic("boom\nsecond line") }
	defer func() { beforeAction = orig }()
	for _, args := range [][]string{{"snapshot", "status", "x"}, {"backup", "list", "--repo", t.TempDir()}, {"alarm", "list"}} {
		stdout, stderr, code := runCLI(args...)
		if code != exitError || stdout != "" || strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, "internal error: boom; second line") {
			t.Errorf("%q: exit %d, stdout %q, stderr %q", args, code, stdout, stderr)
		}
	}
}
