package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"filippo.io/age"

	"github.com/etcdkit/etcdkit/backup"
	"github.com/etcdkit/etcdkit/internal/testetcd"
)

// TestBackupCLI: create (encrypted) into S3, list, check, restore straight
// from the repository, copy to a directory, prune and delete, with the
// documented exit codes for the failures.
func TestBackupCLI(t *testing.T) {
	m := testetcd.StartSingle(t)
	if _, err := testetcd.Load(testetcd.Ctx(t, time.Minute), m.Client(t), testetcd.LoadSpec{Keys: 300, Rounds: 2, Seed: 2}); err != nil {
		t.Fatal(err)
	}
	s3 := testetcd.StartS3(t, "bkp")
	id := testetcd.Must(age.GenerateX25519Identity())(t)
	dir := t.TempDir()
	idFile := filepath.Join(dir, "key.txt")
	testetcd.WriteFile(t, idFile, []byte(id.String()+"\n"))
	repoURL := s3.URL("bkp", "etcd")
	t.Setenv("ETCDKIT_REPO", repoURL)

	run := func(args ...string) string {
		t.Helper()
		out, errOut, code := runCLI(args...)
		if code != 0 {
			t.Fatalf("%v: exit %d, stdout %q, stderr %q", args, code, out, errOut)
		}
		return out
	}
	run("backup", "create", "--endpoints", m.ClientURL, "--encrypt-to", id.Recipient().String())
	run("backup", "create", "--endpoints", m.ClientURL)
	var list []backup.Manifest
	if err := json.Unmarshal([]byte(run("backup", "list", "-w", "json")), &list); err != nil || len(list) != 2 || list[0].Encryption != "age" {
		t.Fatalf("list %+v %v", list, err)
	}
	run("backup", "check", "--identity", idFile)
	restored := filepath.Join(dir, "restored.etcd")
	run("snapshot", "restore", "--backup", list[0].ID, "--identity", idFile, "--data-dir", restored)
	if _, err := os.Stat(filepath.Join(restored, "member", "snap", "db")); err != nil {
		t.Fatal(err)
	}
	expectFailure(t, []string{"snapshot", "restore", "--backup", list[0].ID, "--data-dir", filepath.Join(dir, "x")}, exitInput, "--identity")
	expectFailure(t, []string{"snapshot", "restore", "--backup", "nope", "--data-dir", filepath.Join(dir, "x")}, exitInput, "no such backup")
	copyDir := filepath.Join(dir, "copy")
	run("backup", "copy", "--to", copyDir)
	if out := run("backup", "list", "--repo", copyDir); strings.Count(out, "\n") != 2 {
		t.Errorf("copy lists %q", out)
	}
	expectFailure(t, []string{"backup", "prune"}, exitUsage, "--keep")
	if out := run("backup", "prune", "--keep-last", "1", "--dry-run"); !strings.Contains(out, "last 1") {
		t.Errorf("dry run %q", out)
	}
	run("backup", "delete", list[1].ID)
	if out := run("backup", "list"); strings.Count(out, "\n") != 1 {
		t.Errorf("after delete %q", out)
	}

	// A damaged object in the copy: check says so with exit 5.
	objs := testetcd.Must(filepath.Glob(filepath.Join(copyDir, "backups", "*", "snapshot.db*")))(t)
	if len(objs) == 0 {
		t.Fatal("no stored object in the copy")
	}
	testetcd.FlipByte(t, objs[0], -1)
	if _, errOut, code := runCLI("backup", "check", "--repo", copyDir, "--identity", idFile); code != exitCorrupt || !strings.Contains(errOut, "damaged") {
		t.Errorf("check of a damaged copy: exit %d, stderr %q", code, errOut)
	}
}
