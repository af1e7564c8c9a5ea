package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/internal/etcdfmt"
	"github.com/etcdkit/etcdkit/internal/k8stest"
	"github.com/etcdkit/etcdkit/internal/testetcd"
)

// drillReport is the part of backup drill's JSON the tests read.
type drillReport struct {
	Backup         string
	Checks         []drillCheck
	OK             bool
	ServingSeconds float64
}

type drillCheck struct {
	Name, Detail string
	OK           bool
}

func runDrill(t *testing.T, args ...string) (drillReport, string, int) {
	t.Helper()
	out, errOut, code := runCLI(append([]string{"backup", "drill", "-w", "json"}, args...)...)
	var r drillReport
	if out != "" {
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatalf("drill output %q: %v", out, err)
		}
	}
	return r, errOut, code
}

// TestDrillPasses: a backup of data written by etcd 3.5, 3.6 and 3.7
// restores, boots (embedded etcd, and the release's own binary) and
// serves what its manifest recorded; the manifest carries the HashKV the
// member confirmed at backup time; the scratch data is gone afterwards.
func TestDrillPasses(t *testing.T) {
	for _, line := range testetcd.Versions {
		t.Run("etcd-"+line, func(t *testing.T) {
			p, _ := testetcd.LoadedProcess(t, line, testetcd.LoadSpec{Keys: 300, Rounds: 2, Seed: 5})
			repo := filepath.Join(t.TempDir(), "repo")
			out, errOut, code := runCLI("backup", "create", "--repo", repo, "--endpoints", p.ClientURL, "-w", "json")
			if code != 0 {
				t.Fatalf("backup create: exit %d %q", code, errOut)
			}
			var ms []struct {
				HashKV struct {
					Hash, Server uint32
					Compared     bool
				}
				Keys, Leases int64
			}
			if err := json.Unmarshal([]byte(out), &ms); err != nil || len(ms) != 1 {
				t.Fatalf("backup create -w json: %q: %v", out, err)
			}
			if m := ms[0]; !m.HashKV.Compared || m.HashKV.Hash != m.HashKV.Server || m.Keys == 0 || m.Leases != 3 {
				t.Fatalf("manifest evidence %+v", ms[0])
			}
			scratch := t.TempDir()
			runs := [][]string{{"--repo", repo, "--scratch-dir", scratch}}
			if line == "3.5" {
				runs = append(runs, []string{"latest", "--repo", repo, "--scratch-dir", scratch, "--etcd-binary", p.Bins.Etcd})
			}
			for _, args := range runs {
				r, errOut, code := runDrill(t, args...)
				if code != 0 || !r.OK || len(r.Checks) != 6 || r.ServingSeconds <= 0 {
					t.Fatalf("drill %q: exit %d, stderr %q, report %+v", args, code, errOut, r)
				}
				for _, c := range r.Checks {
					if !c.OK {
						t.Fatalf("check %s failed: %+v", c.Name, r)
					}
				}
				if left := testetcd.DirNames(t, scratch); len(left) > 0 {
					t.Fatalf("the drill left %v", left)
				}
			}
		})
	}
}

// TestDrillCatches: a drill fails (exit 6, naming the check) for a backup
// whose stored snapshot was replaced by another valid one (its hashes in
// the manifest updated: the repository check passes, HashKV differs), for
// a manifest whose recorded HashKV was altered, and for a snapshot that
// boots but lost its leases.
func TestDrillCatches(t *testing.T) {
	write := func(odd string) (*testetcd.Member, string) {
		m := testetcd.StartSingle(t)
		cli := m.Client(t)
		ctx := testetcd.Ctx(t, time.Minute)
		l, err := cli.Grant(ctx, 3600)
		if err != nil {
			t.Fatal(err)
		}
		for i := range 30 {
			v := "same"
			if i == 11 {
				v = odd
			}
			if _, err := cli.Put(ctx, fmt.Sprintf("/k/%d", i), v, clientv3.WithLease(l.ID)); err != nil {
				t.Fatal(err)
			}
		}
		repo := filepath.Join(t.TempDir(), "repo")
		if _, errOut, code := runCLI("backup", "create", "--repo", repo, "--endpoints", m.ClientURL, "--compression", "none"); code != 0 {
			t.Fatalf("backup create: exit %d %q", code, errOut)
		}
		return m, repo
	}
	_, repo := write("a")
	_, other := write("b")
	manifest := func(repo string) (string, map[string]any) {
		paths, err := filepath.Glob(filepath.Join(repo, "backups", "*", "manifest.json"))
		if err != nil || len(paths) != 1 {
			t.Fatalf("manifests of %s: %v %v", repo, paths, err)
		}
		var m map[string]any
		if err := json.Unmarshal(testetcd.Must(os.ReadFile(paths[0]))(t), &m); err != nil {
			t.Fatal(err)
		}
		return paths[0], m
	}
	// replace stores b as the backup's snapshot with every hash the
	// repository checks updated, and edit changes the manifest.
	replace := func(t *testing.T, repo string, b []byte, edit func(map[string]any)) {
		path, m := manifest(repo)
		sum := sha256.Sum256(b)
		m["size"], m["storedSize"] = len(b), len(b)
		m["rawSha256"], m["storedSha256"] = hex.EncodeToString(sum[:]), hex.EncodeToString(sum[:])
		m["sha256"] = hex.EncodeToString(b[len(b)-32:])
		if edit != nil {
			edit(m)
		}
		testetcd.WriteFile(t, filepath.Join(filepath.Dir(path), "snapshot.db"), b)
		testetcd.WriteFile(t, path, testetcd.Must(json.Marshal(m))(t))
		if _, errOut, code := runCLI("backup", "check", "--repo", repo); code != 0 {
			t.Fatalf("the tampered repository does not pass backup check: %q", errOut)
		}
	}
	original := func(repo string) []byte {
		path, _ := manifest(repo)
		return testetcd.Must(os.ReadFile(filepath.Join(filepath.Dir(path), "snapshot.db")))(t)
	}
	good, foreign := original(repo), original(other)

	for _, tc := range []struct {
		name, check string
		snapshot    []byte
		edit        func(map[string]any)
	}{
		{"another cluster's snapshot", "hashkv", foreign, nil},
		{"altered recorded HashKV", "hashkv", good, func(m map[string]any) {
			h := m["hashKV"].(map[string]any)
			h["hash"] = h["hash"].(float64) + 1
		}},
		{"leases lost", "leases", withoutLeases(t, good), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "repo")
			testetcd.Run(t, "cp", "-a", repo, dir)
			replace(t, dir, tc.snapshot, tc.edit)
			r, errOut, code := runDrill(t, "--repo", dir)
			if code != exitMismatch || r.OK || !strings.Contains(errOut, tc.check+":") || strings.Count(errOut, "\n") != 1 {
				t.Fatalf("exit %d, stderr %q, report %+v", code, errOut, r)
			}
		})
	}
}

// withoutLeases is the snapshot with its lease bucket emptied and a new
// sha256 trailer: it restores and boots, its keys and HashKV unchanged.
func withoutLeases(t *testing.T, snap []byte) []byte {
	path := filepath.Join(t.TempDir(), "db")
	testetcd.WriteFile(t, path, snap[:len(snap)-32])
	db := testetcd.Must(bolt.Open(path, 0o600, nil))(t)
	err := db.Update(func(tx *bolt.Tx) error {
		if err := tx.DeleteBucket(etcdfmt.BucketLease); err != nil {
			return err
		}
		_, err := tx.CreateBucket(etcdfmt.BucketLease)
		return err
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	b := testetcd.Must(os.ReadFile(path))(t)
	sum := sha256.Sum256(b)
	return append(b, sum[:]...)
}

// TestDrillKubernetes: the drill of a Kubernetes cluster's backup decodes
// every object under /registry/ (counting the encrypted ones and the
// unknown type, not failing on them), and fails on a value that is not a
// Kubernetes object.
func TestDrillKubernetes(t *testing.T) {
	m := testetcd.StartSingle(t)
	cli := m.Client(t)
	ctx := testetcd.Ctx(t, time.Minute)
	f, err := k8stest.Write(ctx, cli, "/registry/", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	repo := filepath.Join(t.TempDir(), "repo")
	backupCreate := func() {
		if _, errOut, code := runCLI("backup", "create", "--repo", repo, "--endpoints", m.ClientURL); code != 0 {
			t.Fatalf("backup create: exit %d %q", code, errOut)
		}
	}
	backupCreate()
	r, errOut, code := runDrill(t, "--repo", repo)
	var k8s *drillCheck
	for i := range r.Checks {
		if r.Checks[i].Name == "kubernetes" {
			k8s = &r.Checks[i]
		}
	}
	encrypted := 0
	for _, v := range f.Latest() {
		if v.Encryption != "" {
			encrypted++
		}
	}
	objects := len(f.Latest()) - encrypted - 1 // one of an unknown type
	want := fmt.Sprintf("%d objects under /registry/ decode (%d encrypted at rest and 1 of types", objects, encrypted)
	if code != 0 || k8s == nil || !k8s.OK || !strings.HasPrefix(k8s.Detail, want) {
		t.Fatalf("drill: exit %d %q, kubernetes check %+v, want %q", code, errOut, k8s, want)
	}
	if _, err := cli.Put(ctx, "/registry/configmaps/ns-a/broken", "not an object"); err != nil {
		t.Fatal(err)
	}
	backupCreate()
	r, errOut, code = runDrill(t, "--repo", repo)
	if code != exitMismatch || r.OK || !strings.Contains(errOut, "kubernetes: 1 of") || !strings.Contains(errOut, "/registry/configmaps/ns-a/broken") {
		t.Fatalf("drill of a backup with a broken object: exit %d %q", code, errOut)
	}
}
