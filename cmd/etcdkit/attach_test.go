package main

import (
	"bytes"
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

// TestBackupAttachments: files stored with a backup come back byte for
// byte with their modes (backup attachments, and restore --attachments-dir)
// from an S3 repository, encrypted to the backup's recipient (not readable
// in the bucket); plaintext is refused unless asked for; a changed
// attachment is refused; existing files are not overwritten; copy, prune
// and delete carry or remove them with the backup.
func TestBackupAttachments(t *testing.T) {
	m := testetcd.StartSingle(t)
	if _, err := m.Client(t).Put(testetcd.Ctx(t, time.Minute), "/registry/secrets/default/s", "v"); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	files := map[string]struct {
		data []byte
		mode os.FileMode
	}{
		"encryption-config.yaml": {[]byte("kind: EncryptionConfiguration\nsecret: c2VjcmV0IGtleQ==\n"), 0o600},
		"ca.crt":                 {[]byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"), 0o644},
	}
	var attach []string
	for name, f := range files {
		p := filepath.Join(dir, "src", name)
		testetcd.Must(0, os.MkdirAll(filepath.Dir(p), 0o700))(t)
		testetcd.WriteFile(t, p, f.data)
		testetcd.Must(0, os.Chmod(p, f.mode))(t)
		attach = append(attach, "--attach", p)
	}
	id := testetcd.Must(age.GenerateX25519Identity())(t)
	idFile := filepath.Join(dir, "key.txt")
	testetcd.WriteFile(t, idFile, []byte(id.String()+"\n"))
	s3 := testetcd.StartS3(t, "bkp")
	repo := s3.URL("bkp", "etcd")
	run := func(args ...string) string {
		t.Helper()
		out, errOut, code := runCLI(args...)
		if code != 0 {
			t.Fatalf("%v: exit %d, stdout %q, stderr %q", args, code, out, errOut)
		}
		return out
	}

	// Plaintext attachments are refused by default, before anything is stored.
	expectFailure(t, append([]string{"backup", "create", "--repo", repo, "--endpoints", m.ClientURL}, attach...), exitUsage, "--allow-plaintext-attachments")
	if out := run("backup", "list", "--repo", repo); out != "" {
		t.Fatalf("a refused backup left %q", out)
	}
	run(append([]string{"backup", "create", "--repo", repo, "--endpoints", m.ClientURL, "--encrypt-to", id.Recipient().String()}, attach...)...)
	var list []backup.Manifest
	if err := json.Unmarshal([]byte(run("backup", "list", "--repo", repo, "-w", "json")), &list); err != nil || len(list) != 1 || len(list[0].Attachments) != 2 {
		t.Fatalf("list %+v %v", list, err)
	}
	// Stored encrypted: the secret is not in the bucket's objects.
	for _, a := range list[0].Attachments {
		if !strings.HasSuffix(a.Object, ".age") {
			t.Fatalf("attachment object %s is not encrypted", a.Object)
		}
	}
	bucketDir := s3.Dir
	filepath.WalkDir(bucketDir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && bytes.Contains(testetcd.Must(os.ReadFile(p))(t), []byte("c2VjcmV0IGtleQ==")) {
			t.Errorf("%s holds the attachment in plaintext", p)
		}
		return nil
	})
	same := func(t *testing.T, out string) {
		t.Helper()
		for name, f := range files {
			p := filepath.Join(out, name)
			b, err := os.ReadFile(p)
			fi, serr := os.Stat(p)
			if err != nil || serr != nil || !bytes.Equal(b, f.data) || fi.Mode().Perm() != f.mode {
				t.Fatalf("%s: %v %v, mode %v (want %v)", p, err, serr, fi, f.mode)
			}
		}
	}
	out := filepath.Join(dir, "out")
	expectFailure(t, []string{"backup", "attachments", "--repo", repo, "--output-dir", out}, exitInput, "--identity")
	run("backup", "attachments", "--repo", repo, "--identity", idFile, "--output-dir", out)
	same(t, out)
	expectFailure(t, []string{"backup", "attachments", "--repo", repo, "--identity", idFile, "--output-dir", out}, exitRefused, "refusing to overwrite")
	restored, restoredFiles := filepath.Join(dir, "restored.etcd"), filepath.Join(dir, "restored-files")
	run("snapshot", "restore", "--repo", repo, "--identity", idFile, "--data-dir", restored, "--attachments-dir", restoredFiles)
	same(t, restoredFiles)

	// A copy carries them; a changed attachment is refused; delete removes them.
	local := filepath.Join(dir, "local")
	run("backup", "copy", "--repo", repo, "--to", local)
	run("backup", "attachments", "--repo", local, "--identity", idFile, "--output-dir", filepath.Join(dir, "from-copy"))
	same(t, filepath.Join(dir, "from-copy"))
	obj := filepath.Join(local, filepath.FromSlash(list[0].Attachments[0].Object))
	testetcd.FlipByte(t, obj, 40)
	expectFailure(t, []string{"backup", "attachments", "--repo", local, "--identity", idFile, "--output-dir", filepath.Join(dir, "bad")}, exitCorrupt, "backup damaged")
	if left := testetcd.DirNames(t, filepath.Join(dir, "bad")); len(left) > 0 {
		t.Fatalf("a refused attachment left %v", left)
	}
	run("backup", "delete", "--repo", local, list[0].ID)
	if _, err := os.Stat(filepath.Dir(obj)); !os.IsNotExist(err) {
		if names := testetcd.DirNames(t, filepath.Dir(obj)); len(names) > 0 {
			t.Fatalf("delete left the attachments %v", names)
		}
	}

	// Plaintext when asked for, into a local repository.
	plain := filepath.Join(dir, "plain")
	run(append([]string{"backup", "create", "--repo", plain, "--endpoints", m.ClientURL, "--allow-plaintext-attachments"}, attach...)...)
	run("backup", "attachments", "--repo", plain, "--output-dir", filepath.Join(dir, "plain-out"))
	same(t, filepath.Join(dir, "plain-out"))
	// Prune keeps a kept backup's attachments (they are not leftovers).
	run("backup", "prune", "--repo", plain, "--keep-last", "1", "--grace", "0s")
	run("backup", "attachments", "--repo", plain, "--output-dir", filepath.Join(dir, "after-prune"))
	same(t, filepath.Join(dir, "after-prune"))
}

// TestSchedulerAttachmentsRefused: the scheduler refuses plaintext
// attachments (and missing files) when it starts, as backup create does,
// and drills of encrypted backups without the identity to open them.
func TestSchedulerAttachmentsRefused(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "token")
	testetcd.WriteFile(t, f, []byte("secret"))
	base := []string{"scheduler", "--repo", dir, "--check", "--metrics-addr=", "--endpoints", "127.0.0.1:1", "--dial-timeout", "200ms", "--command-timeout", "300ms"}
	expectFailure(t, append(base, "--attach", f), exitUsage, "--allow-plaintext-attachments")
	expectFailure(t, append(base, "--attach", filepath.Join(dir, "missing"), "--allow-plaintext-attachments"), exitUsage, "no such file")
	// Drills of encrypted backups need the identity.
	id := testetcd.Must(age.GenerateX25519Identity())(t)
	expectFailure(t, append(base, "--drill-schedule", "@daily", "--encrypt-to", id.Recipient().String()), exitUsage, "--identity")
}
