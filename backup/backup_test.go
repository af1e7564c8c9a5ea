package backup_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"filippo.io/age"

	"github.com/etcdkit/etcdkit/backup"
	"github.com/etcdkit/etcdkit/cluster"
	"github.com/etcdkit/etcdkit/hashkv"
	"github.com/etcdkit/etcdkit/internal/testetcd"
	"github.com/etcdkit/etcdkit/repo"
	"github.com/etcdkit/etcdkit/restore"
)

const childEnv = "ETCDKIT_TEST_BACKUP_CHILD"

func TestMain(m *testing.M) {
	testetcd.RunChild(childEnv, runChild)
	os.Exit(m.Run())
}

// source is a running member with data, and a connection to it.
type source struct {
	m *testetcd.Member
	c *cluster.Cluster
}

func newSource(t *testing.T) source {
	t.Helper()
	m := testetcd.StartSingle(t)
	if _, err := testetcd.Load(testetcd.Ctx(t, time.Minute), m.Client(t), testetcd.SmallSpec); err != nil {
		t.Fatal(err)
	}
	c, err := cluster.Connect(context.Background(), cluster.Config{Endpoints: []string{m.ClientURL}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return source{m, c}
}

func (s source) write(t *testing.T, n int) {
	for i := range n {
		if _, err := s.m.Client(t).Put(context.Background(), fmt.Sprintf("/more/%d", i), "x"); err != nil {
			t.Fatal(err)
		}
	}
}

// restoreFromRepo streams a backup into a data dir and returns the
// restored db's hashkv at the backup's revision.
func restoreFromRepo(t *testing.T, r *backup.Repository, m backup.Manifest, ids []age.Identity) (string, error) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "restored.etcd")
	_, err := r.Restore(context.Background(), m, ids, restore.Config{
		Name: "r", PeerURLs: []string{"http://127.0.0.1:2380"}, InitialCluster: "r=http://127.0.0.1:2380",
		InitialClusterToken: "t", DataDir: dir,
	})
	return dir, err
}

// TestRepository creates backups in a local directory and in a real S3
// server (plain zstd, uncompressed, zstd+age), lists, checks, restores the
// encrypted one by streaming it and compares its HashKV with the server's,
// copies to the other kind of store, deletes and prunes.
func TestRepository(t *testing.T) {
	src := newSource(t)
	s3 := testetcd.StartS3(t, "backups", "copies")
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, kind := range []string{"local", "s3"} {
		t.Run(kind, func(t *testing.T) {
			url, other := filepath.Join(t.TempDir(), "repo"), s3.URL("copies", kind)
			if kind == "s3" {
				url, other = s3.URL("backups", "site-a"), filepath.Join(t.TempDir(), "copy")
			}
			r, err := backup.Open(ctx, url)
			if err != nil {
				t.Fatal(err)
			}
			opts := []backup.CreateOptions{
				{Verify: true},
				{Verify: true, Compression: "none"},
				{Verify: true, Recipients: []age.Recipient{id.Recipient()}},
			}
			var made []backup.Manifest
			for _, o := range opts {
				src.write(t, 20)
				m, err := r.Create(ctx, src.c, o)
				if err != nil {
					t.Fatal(err)
				}
				made = append(made, m)
			}
			list, err := r.List(ctx)
			if err != nil || len(list) != 3 {
				t.Fatalf("list %d %v", len(list), err)
			}
			for i, m := range list {
				if m.ID != made[i].ID || !m.Verified || m.StoredSHA256 == "" || m.RawSHA256 == "" || m.Revision == 0 {
					t.Errorf("listed %+v, made %+v", m, made[i])
				}
				if i > 0 && m.Revision <= list[i-1].Revision {
					t.Errorf("revisions not increasing: %d then %d", list[i-1].Revision, m.Revision)
				}
			}
			if list[0].StoredSize >= list[0].Size || list[1].StoredSize != list[1].Size {
				t.Errorf("stored sizes: zstd %d of %d, none %d of %d", list[0].StoredSize, list[0].Size, list[1].StoredSize, list[1].Size)
			}
			res, err := r.Check(ctx, "", []age.Identity{id})
			if err != nil || len(res) != 3 {
				t.Fatalf("check %+v %v", res, err)
			}
			for _, c := range res {
				if !c.OK || c.Content != "snapshot" {
					t.Errorf("check %+v", c)
				}
			}
			if res := testetcd.Must(r.Check(ctx, made[2].ID, nil))(t); !res[0].OK || res[0].Content != "stored object" {
				t.Errorf("check without identity %+v", res)
			}

			latest, err := r.Find(ctx, "latest")
			if err != nil || latest.ID != made[2].ID {
				t.Fatalf("latest %+v %v", latest, err)
			}
			dir, err := restoreFromRepo(t, r, latest, []age.Identity{id})
			if err != nil {
				t.Fatal(err)
			}
			hk, err := hashkv.Compute(hashkv.DBPath(dir), latest.Revision, time.Second)
			if err != nil {
				t.Fatal(err)
			}
			srv, err := src.m.Client(t).HashKV(testetcd.Ctx(t, 30*time.Second), src.m.ClientURL, latest.Revision)
			if err != nil || srv.Hash != hk.Hash {
				t.Errorf("restored hashkv %d, server %d at %d (%v)", hk.Hash, srv.Hash, latest.Revision, err)
			}

			dst, err := backup.Open(ctx, other)
			if err != nil {
				t.Fatal(err)
			}
			copied, err := r.CopyTo(ctx, dst)
			if err != nil || len(copied) != 3 {
				t.Fatalf("copy %d %v", len(copied), err)
			}
			if again, err := r.CopyTo(ctx, dst); err != nil || len(again) != 0 {
				t.Errorf("second copy %d %v", len(again), err)
			}
			if res, err := dst.Check(ctx, "", []age.Identity{id}); err != nil || len(res) != 3 {
				t.Errorf("check the copy: %+v %v", res, err)
			}

			if _, err := r.Delete(ctx, made[1].ID); err != nil {
				t.Fatal(err)
			}
			if _, err := r.Prune(ctx, backup.Retention{}, 0, false); !errors.Is(err, backup.ErrRetention) {
				t.Errorf("prune without rules: %v", err)
			}
			pr, err := r.Prune(ctx, backup.Retention{KeepLast: 1}, 0, true)
			if err != nil || len(pr.Decisions) != 2 || !pr.Decisions[0].Keep || pr.Decisions[1].Keep {
				t.Fatalf("dry prune %+v %v", pr, err)
			}
			if l := testetcd.Must(r.List(ctx))(t); len(l) != 2 {
				t.Errorf("dry run deleted: %d left", len(l))
			}
			if _, err := r.Prune(ctx, backup.Retention{KeepLast: 1}, 0, false); err != nil {
				t.Fatal(err)
			}
			if l := testetcd.Must(r.List(ctx))(t); len(l) != 1 || l[0].ID != made[2].ID {
				t.Errorf("after prune: %+v", l)
			}
			objs := testetcd.Must(r.Store.List(ctx, ""))(t)
			if len(objs) != 2 { // one backup: data and manifest
				t.Errorf("objects left: %+v", objs)
			}
		})
	}
}

func day(d, h int) time.Time { return time.Date(2026, 11, d, h, 0, 0, 0, time.UTC) }

// TestDecide checks the retention rules on a month of backups.
func TestDecide(t *testing.T) {
	var all []backup.Manifest
	for d := 1; d <= 28; d++ {
		for _, h := range []int{3, 15} {
			m := backup.Manifest{ID: fmt.Sprintf("%02d-%02d", d, h)}
			m.Time, m.Revision = day(d, h), int64(d*100+h)
			all = append(all, m)
		}
	}
	all[10].Verified = true // 06-03, old
	kept := func(p backup.Retention) []string {
		var ids []string
		for _, d := range backup.Decide(all, p) {
			if d.Keep {
				ids = append(ids, d.ID)
			}
		}
		return ids
	}
	for _, tc := range []struct {
		name string
		p    backup.Retention
		want string
	}{
		{"last 3", backup.Retention{KeepLast: 3}, "28-15 28-03 27-15 06-03"},
		{"daily 3", backup.Retention{KeepDaily: 3}, "28-15 27-15 26-15 06-03"},
		{"hourly 2", backup.Retention{KeepHourly: 2}, "28-15 28-03 06-03"},
		{"weekly 2", backup.Retention{KeepWeekly: 2}, "28-15 22-15 06-03"},
		{"monthly 2", backup.Retention{KeepMonthly: 2}, "28-15 06-03"},
		{"within 24h", backup.Retention{KeepWithin: 24 * time.Hour}, "28-15 28-03 27-15 06-03"},
		{"combined", backup.Retention{KeepLast: 1, KeepDaily: 2}, "28-15 27-15 06-03"},
	} {
		if got := strings.Join(kept(tc.p), " "); got != tc.want {
			t.Errorf("%s: kept %s, want %s", tc.name, got, tc.want)
		}
	}
	// Order comes from time and revision, never from the ID.
	swapped := append([]backup.Manifest(nil), all...)
	swapped[len(swapped)-1].ID, swapped[0].ID = swapped[0].ID, swapped[len(swapped)-1].ID
	if d := backup.Decide(swapped, backup.Retention{KeepLast: 1}); d[0].Time != day(28, 15) {
		t.Errorf("newest by time is %v", d[0].Time)
	}
}

// childSpec is a backup create in a child process, paused during the
// upload so the test can kill it.
type childSpec struct {
	Repo     string
	Endpoint string
	Access   string
	Secret   string
	TempDir  string
}

func runChild(spec string) int {
	var cs childSpec
	if err := json.Unmarshal([]byte(spec), &cs); err != nil {
		return 2
	}
	os.Setenv("AWS_ACCESS_KEY_ID", cs.Access)
	os.Setenv("AWS_SECRET_ACCESS_KEY", cs.Secret)
	os.Setenv("TMPDIR", cs.TempDir) // where anything staged would go
	ctx := context.Background()
	r, err := backup.Open(ctx, cs.Repo)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	c, err := cluster.Connect(ctx, cluster.Config{Endpoints: []string{cs.Endpoint}})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	paused := false
	_, err = r.Create(ctx, c, backup.CreateOptions{Compression: "none", Uploaded: func(n int64) {
		if !paused && n > 1<<20 {
			paused = true
			fmt.Println("paused")
			time.Sleep(time.Hour)
		}
	}})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// TestFaults: a killed create leaves nothing listed and prune removes its
// traces; a flipped byte in a stored object fails check and restore; a
// wrong identity, a missing bucket, wrong credentials and the server
// stopping mid-upload each fail with their own error.
func TestFaults(t *testing.T) {
	src := newSource(t)
	s3 := testetcd.StartS3(t, "backups")
	ctx := context.Background()
	local := filepath.Join(t.TempDir(), "repo")

	for _, url := range []string{local, s3.URL("backups", "killed")} {
		t.Run("killed create "+strings.SplitN(url, "?", 2)[0], func(t *testing.T) {
			stage := t.TempDir()
			cmd, out, stderr := testetcd.StartChild(t, childEnv, childSpec{Repo: url, Endpoint: src.m.ClientURL, Access: s3.Access, Secret: s3.Secret, TempDir: stage})
			buf := make([]byte, 16)
			if n, _ := out.Read(buf); !strings.HasPrefix(string(buf[:n]), "paused") {
				cmd.Wait()
				t.Fatalf("child did not pause: %s", stderr)
			}
			cmd.Process.Kill()
			cmd.Wait()
			r, err := backup.Open(ctx, url)
			if err != nil {
				t.Fatal(err)
			}
			if l, err := r.List(ctx); err != nil || len(l) != 0 {
				t.Fatalf("listed after a killed create: %+v %v", l, err)
			}
			pr, err := r.Prune(ctx, backup.Retention{KeepLast: 5}, 0, false)
			if err != nil {
				t.Fatal(err)
			}
			objs := testetcd.Must(r.Store.List(ctx, ""))(t)
			left := testetcd.Must(r.Store.Leftovers(ctx, time.Now().Add(time.Hour)))(t)
			if len(objs)+len(left) != 0 {
				t.Errorf("after prune (removed %v): objects %+v, leftovers %v", pr.Leftovers, objs, left)
			}
			// A create streams the snapshot into the store: nothing is
			// staged on local disk (the child's TMPDIR is stage).
			if left := testetcd.DirNames(t, stage); len(left) != 0 {
				t.Fatalf("staged on disk by the killed create: %v", left)
			}
			if _, err := r.Create(ctx, src.c, backup.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
		})
	}

	r, err := backup.Open(ctx, local)
	if err != nil {
		t.Fatal(err)
	}
	id := testetcd.Must(age.GenerateX25519Identity())(t)
	m, err := r.Create(ctx, src.c, backup.CreateOptions{Recipients: []age.Recipient{id.Recipient()}})
	if err != nil {
		t.Fatal(err)
	}
	t.Run("wrong identity", func(t *testing.T) {
		other := testetcd.Must(age.GenerateX25519Identity())(t)
		if _, err := restoreFromRepo(t, r, m, []age.Identity{other}); !errors.Is(err, backup.ErrIdentity) {
			t.Fatalf("error %v", err)
		}
		if _, err := restoreFromRepo(t, r, m, nil); !errors.Is(err, backup.ErrIdentity) || !strings.Contains(err.Error(), "--identity") {
			t.Fatalf("error %v", err)
		}
	})
	t.Run("manifest's db hash differs", func(t *testing.T) {
		// The restore hashes the db bytes once and checks them against
		// the manifest's record before it commits anything.
		mf := filepath.Join(local, "backups", m.ID, "manifest.json")
		orig, err := os.ReadFile(mf)
		if err != nil {
			t.Fatal(err)
		}
		defer testetcd.WriteFile(t, mf, orig)
		other := strings.Repeat("ab", 32)
		testetcd.WriteFile(t, mf, []byte(strings.Replace(string(orig), `"sha256": "`+m.SHA256+`"`, `"sha256": "`+other+`"`, 1)))
		bad, err := r.Find(ctx, m.ID)
		if err != nil || bad.SHA256 != other {
			t.Fatalf("tampered manifest: %+v %v", bad, err)
		}
		dir, err := restoreFromRepo(t, r, bad, []age.Identity{id})
		if !errors.Is(err, restore.ErrHashMismatch) || !strings.Contains(err.Error(), "manifest") {
			t.Fatalf("restore: %v", err)
		}
		if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("restore left %s", dir)
		}
	})
	t.Run("flipped byte", func(t *testing.T) {
		obj := filepath.Join(local, filepath.FromSlash(m.Object))
		b, err := os.ReadFile(obj)
		if err != nil {
			t.Fatal(err)
		}
		b[len(b)/2] ^= 0x20
		testetcd.WriteFile(t, obj, b)
		res, err := r.Check(ctx, m.ID, []age.Identity{id})
		if !errors.Is(err, backup.ErrCorrupt) || res[0].OK {
			t.Fatalf("check %+v %v", res, err)
		}
		res, err = r.Check(ctx, m.ID, nil) // the stored object's hash alone
		if !errors.Is(err, backup.ErrCorrupt) || res[0].OK {
			t.Fatalf("check without identity %+v %v", res, err)
		}
		dir, err := restoreFromRepo(t, r, m, []age.Identity{id})
		if !errors.Is(err, backup.ErrCorrupt) {
			t.Fatalf("restore: %v", err)
		}
		if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("restore left %s", dir)
		}
	})
	t.Run("missing bucket", func(t *testing.T) {
		if _, err := backup.Open(ctx, s3.URL("nope", "x")); !errors.Is(err, repo.ErrNotFound) {
			t.Fatalf("error %v", err)
		}
	})
	t.Run("wrong credentials", func(t *testing.T) {
		t.Setenv("AWS_SECRET_ACCESS_KEY", "wrong")
		if _, err := backup.Open(ctx, s3.URL("backups", "x")); !errors.Is(err, repo.ErrAccess) {
			t.Fatalf("error %v", err)
		}
	})
	t.Run("server stops mid-upload", func(t *testing.T) {
		r, err := backup.Open(ctx, s3.URL("backups", "stopped"))
		if err != nil {
			t.Fatal(err)
		}
		stopped := false
		_, err = r.Create(ctx, src.c, backup.CreateOptions{Compression: "none", Uploaded: func(n int64) {
			if !stopped && n > 1<<20 {
				stopped = true
				s3.Stop()
			}
		}})
		if err == nil {
			t.Fatal("create succeeded without a server")
		}
		s3.Restart(t)
		r, err = backup.Open(ctx, s3.URL("backups", "stopped"))
		if err != nil {
			t.Fatal(err)
		}
		if l, err := r.List(ctx); err != nil || len(l) != 0 {
			t.Fatalf("listed after a failed upload: %+v %v", l, err)
		}
	})
}

// TestSharedCredentialsFile: without AWS_* keys in the environment the S3
// store reads the shared credentials file, as the AWS tools do.
func TestSharedCredentialsFile(t *testing.T) {
	s3 := testetcd.StartS3(t, "creds")
	file := filepath.Join(t.TempDir(), "credentials")
	testetcd.WriteFile(t, file, []byte(fmt.Sprintf("[default]\naws_access_key_id = %s\naws_secret_access_key = %s\n", s3.Access, s3.Secret)))
	t.Setenv("AWS_ACCESS_KEY_ID", "")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", file)
	r, err := backup.Open(context.Background(), s3.URL("creds", "x"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.List(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "none"))
	if _, err := backup.Open(context.Background(), s3.URL("creds", "x")); !errors.Is(err, repo.ErrAccess) {
		t.Fatalf("without credentials: %v", err)
	}
}
