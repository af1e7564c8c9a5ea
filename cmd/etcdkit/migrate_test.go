package main

import (
	"crypto/sha256"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/etcdkit/etcdkit/internal/etcdfmt"
	"github.com/etcdkit/etcdkit/internal/testetcd"
)

// storageVersion reads meta/storageVersion of a stopped member's db ("" when
// absent, as in a 3.5 db).
func storageVersion(t *testing.T, dataDir string) string {
	t.Helper()
	db, err := bolt.Open(filepath.Join(dataDir, "member", "snap", "db"), 0o400, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var v string
	if err := db.View(func(tx *bolt.Tx) error {
		v = string(tx.Bucket(etcdfmt.BucketMeta).Get(etcdfmt.MetaStorageVersion))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return v
}

func port(t *testing.T, u string) int {
	t.Helper()
	pu, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(pu.Port())
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestMigrate: a data dir written by etcd 3.6, downgraded as etcd
// documents it (downgrade enable 3.5 on the running cluster, stop,
// migrate), boots on etcd 3.5 with the same HashKV; etcdkit leaves the db
// as etcdutl migrate leaves it. Bad input changes nothing.
func TestMigrate(t *testing.T) {
	p, loaded := testetcd.LoadedProcess(t, "3.6", testetcd.LoadSpec{Keys: 300, Rounds: 2, Seed: 3})
	testetcd.Run(t, p.Bins.Etcdctl, "--endpoints", p.ClientURL, "downgrade", "enable", "3.5")
	cli := testetcd.NewClient(t, p.ClientURL)
	want, err := cli.HashKV(testetcd.Ctx(t, 30*time.Second), p.ClientURL, loaded.Revision)
	if err != nil {
		t.Fatal(err)
	}
	p.Stop()
	if v := storageVersion(t, p.DataDir); v != "3.6.0" {
		t.Fatalf("storage version of the 3.6 data dir: %q", v)
	}

	// Bad input first: nothing changes.
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--target-version", "3.4"}, exitUsage, `the minimum is "3.5"`},
		{[]string{"--target-version", "3"}, exitUsage, `expected "X.Y"`},
		{[]string{"--target-version", "3.5", "--data-dir", t.TempDir()}, exitInput, "no such file"},
	} {
		args := append([]string{"migrate"}, tc.args...)
		if len(tc.args) < 3 {
			args = append(args, "--data-dir", p.DataDir)
		}
		expectFailure(t, args, tc.code, tc.want)
	}
	damaged := filepath.Join(t.TempDir(), "damaged.etcd")
	testetcd.Run(t, "cp", "-a", p.DataDir, damaged)
	damagedDB := filepath.Join(damaged, "member", "snap", "db")
	if err := os.Truncate(damagedDB, 5*4096); err != nil {
		t.Fatal(err)
	}
	before := treeSum(t, damaged)
	if _, errOut, code := runCLI("migrate", "--data-dir", damaged, "--target-version", "3.5"); code == exitOK || strings.Count(errOut, "\n") != 1 {
		t.Fatalf("damaged db: exit %d, stderr %q", code, errOut)
	}
	if treeSum(t, damaged) != before {
		t.Fatal("a failed migration changed the data dir")
	}

	viaEtcdutl := filepath.Join(t.TempDir(), "copy.etcd")
	testetcd.Run(t, "cp", "-a", p.DataDir, viaEtcdutl)
	if out, errOut, code := runCLI("migrate", "--data-dir", p.DataDir, "--target-version", "3.5"); code != 0 || out != "migrated storage version from 3.6 to 3.5\n" {
		t.Fatalf("migrate: exit %d %q %q", code, out, errOut)
	}
	testetcd.Run(t, p.Bins.Etcdutl, "migrate", "--data-dir", viaEtcdutl, "--target-version", "3.5")
	if a, b := storageVersion(t, p.DataDir), storageVersion(t, viaEtcdutl); a != b || a != "" {
		t.Fatalf("storage version after etcdkit migrate %q, after etcdutl migrate %q (want none, as 3.5)", a, b)
	}
	if out, _, code := runCLI("migrate", "--data-dir", p.DataDir, "--target-version", "3.5"); code != 0 || out != "storage version up-to-date: 3.5\n" {
		t.Fatalf("second migrate: exit %d %q", code, out)
	}

	old := testetcd.StartProcess(t, testetcd.Binaries(t, "3.5"), testetcd.ProcessConfig{DataDir: p.DataDir, ClientPort: port(t, p.ClientURL), PeerPort: port(t, p.PeerURL)})
	old.WaitReady(t)
	got, err := testetcd.NewClient(t, old.ClientURL).HashKV(testetcd.Ctx(t, 30*time.Second), old.ClientURL, loaded.Revision)
	if err != nil {
		t.Fatal(err)
	}
	if got.Hash != want.Hash {
		t.Fatalf("HashKV on etcd 3.5 %d, on 3.6 before the migration %d", got.Hash, want.Hash)
	}
	// A running member's data dir is refused.
	expectFailure(t, []string{"migrate", "--data-dir", p.DataDir, "--target-version", "3.6", "--timeout", "300ms"}, exitInUse, "in use")
}

// treeSum hashes every file of a directory tree by name.
func treeSum(t *testing.T, dir string) [32]byte {
	t.Helper()
	h := sha256.New()
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		sum := testetcd.FileSum(t, path)
		fmt.Fprintf(h, "%s %x\n", path, sum)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var s [32]byte
	copy(s[:], h.Sum(nil))
	return s
}
