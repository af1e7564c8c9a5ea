package backup_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/etcdkit/etcdkit/backup"
	"github.com/etcdkit/etcdkit/internal/testetcd"
	"github.com/etcdkit/etcdkit/repo"
	"github.com/etcdkit/etcdkit/save"
)

const (
	testID   = "20261122T061924Z-c1999e"
	testHash = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
)

// goodManifest is a manifest as Create writes it.
func goodManifest() backup.Manifest {
	return backup.Manifest{ID: testID, Manifest: save.Manifest{Revision: 42, Size: 4096, SHA256: testHash},
		RawSHA256: testHash, Object: "backups/" + testID + "/snapshot.db.zst", Compression: "zstd", StoredSize: 100, StoredSHA256: testHash}
}

// goodAttachment is the i-th attachment of goodManifest's backup.
func goodAttachment(i int, name string) backup.Attachment {
	h := strings.Repeat("ab", 32)
	return backup.Attachment{Name: name, Object: fmt.Sprintf("backups/%s/attachments/%d-%s", testID, i, name), Mode: 0o600, Size: 3, SHA256: h, StoredSize: 3, StoredSHA256: h}
}

func manifestJSON(t testing.TB, m backup.Manifest) []byte {
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestParseManifest: a manifest is refused unless everything a command
// acts on is what Create would have written.
func TestParseManifest(t *testing.T) {
	at := "backups/" + testID + "/manifest.json"
	for _, tc := range []struct {
		name   string
		edit   func(*backup.Manifest)
		at     string
		refuse string
	}{
		{"as written", func(*backup.Manifest) {}, at, ""},
		{"encrypted", func(m *backup.Manifest) { m.Encryption, m.Object = "age", m.Object+".age" }, at, ""},
		{"uncompressed", func(m *backup.Manifest) { m.Compression, m.Object = "none", "backups/"+testID+"/snapshot.db" }, at, ""},
		{"object outside the repository", func(m *backup.Manifest) { m.Object = "../victim.txt" }, at, "data object"},
		{"object in another backup", func(m *backup.Manifest) { m.Object = "backups/x/../../../../pwn/pwned.txt" }, at, "data object"},
		{"object with the wrong suffix", func(m *backup.Manifest) { m.Object = "backups/" + testID + "/snapshot.db" }, at, "data object"},
		{"id that climbs", func(m *backup.Manifest) { m.ID = "../../etc" }, at, "not a backup id"},
		{"manifest in another backup's directory", func(*backup.Manifest) {}, "backups/20200101T000000Z-aaaaaa/manifest.json", "is not at"},
		{"unknown compression", func(m *backup.Manifest) { m.Compression = "lz4" }, at, "compression"},
		{"unknown encryption", func(m *backup.Manifest) { m.Encryption = "rot13" }, at, "encryption"},
		{"negative size", func(m *backup.Manifest) { m.StoredSize = -1 }, at, "negative"},
		{"hash that is not one", func(m *backup.Manifest) { m.StoredSHA256 = "xyz" }, at, "sha256"},
		{"attachment", func(m *backup.Manifest) { m.Attachments = []backup.Attachment{goodAttachment(0, "token")} }, at, ""},
		{"attachment object outside its backup", func(m *backup.Manifest) {
			a := goodAttachment(0, "token")
			a.Object = "backups/x/../../victim.txt"
			m.Attachments = []backup.Attachment{a}
		}, at, "attachment object"},
		{"attachment name that climbs", func(m *backup.Manifest) { m.Attachments = []backup.Attachment{goodAttachment(0, "../../x")} }, at, "not a file name"},
		{"attachment name twice", func(m *backup.Manifest) {
			m.Attachments = []backup.Attachment{goodAttachment(0, "a"), goodAttachment(1, "a")}
		}, at, "twice"},
		{"attachment mode beyond permissions", func(m *backup.Manifest) {
			a := goodAttachment(0, "a")
			a.Mode = 0o4755
			m.Attachments = []backup.Attachment{a}
		}, at, "mode"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := goodManifest()
			tc.edit(&m)
			got, err := backup.ParseManifest(tc.at, bytes.NewReader(manifestJSON(t, m)))
			if tc.refuse == "" {
				if err != nil || got.Object != m.Object {
					t.Fatalf("refused a good manifest: %v", err)
				}
				return
			}
			if !errors.Is(err, backup.ErrCorrupt) || !strings.Contains(err.Error(), tc.refuse) {
				t.Fatalf("error %v, want %v naming %q", err, backup.ErrCorrupt, tc.refuse)
			}
		})
	}
}

// TestHostileManifestTouchesNothing: a repository whose manifest names a
// file outside it makes delete, prune and copy fail with ErrCorrupt, and
// the file outside survives.
func TestHostileManifestTouchesNothing(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(dir, "victim.txt")
	testetcd.WriteFile(t, victim, []byte("keep me"))
	src := filepath.Join(dir, "r")
	m := goodManifest()
	m.Object = "../victim.txt"
	mdir := filepath.Join(src, "backups", testID)
	if err := os.MkdirAll(mdir, 0o700); err != nil {
		t.Fatal(err)
	}
	testetcd.WriteFile(t, filepath.Join(mdir, "manifest.json"), manifestJSON(t, m))
	ctx := context.Background()
	r := testetcd.Must(backup.Open(ctx, src))(t)
	dst := testetcd.Must(backup.Open(ctx, filepath.Join(dir, "copy")))(t)
	for name, op := range map[string]func() error{
		"delete": func() error { _, err := r.Delete(ctx, testID); return err },
		"prune":  func() error { _, err := r.Prune(ctx, backup.Retention{KeepLast: 1}, 0, false); return err },
		"copy":   func() error { _, err := r.CopyTo(ctx, dst); return err },
	} {
		if err := op(); !errors.Is(err, backup.ErrCorrupt) {
			t.Errorf("%s: %v, want %v", name, err, backup.ErrCorrupt)
		}
	}
	if b, err := os.ReadFile(victim); err != nil || string(b) != "keep me" {
		t.Fatalf("the file outside the repository was touched: %q %v", b, err)
	}
	// The store itself refuses such names, whatever the caller.
	s := testetcd.Must(repo.Open(ctx, src))(t)
	for _, name := range []string{"../victim.txt", "/etc/passwd", "backups/../../victim.txt", "backups//x", "./x"} {
		if err := s.Delete(ctx, name); !errors.Is(err, repo.ErrName) {
			t.Errorf("Delete(%q): %v, want %v", name, err, repo.ErrName)
		}
		if err := s.Put(ctx, name, strings.NewReader("x"), 1); !errors.Is(err, repo.ErrName) {
			t.Errorf("Put(%q): %v, want %v", name, err, repo.ErrName)
		}
	}
	if b, err := os.ReadFile(victim); err != nil || string(b) != "keep me" {
		t.Fatalf("the store wrote outside its root: %q %v", b, err)
	}
}

// FuzzParseManifest: any bytes at any name are a manifest or ErrCorrupt,
// never a panic; an accepted manifest's data object lies in its own
// backup's directory and passes the stores' name check.
func FuzzParseManifest(f *testing.F) {
	f.Add("backups/"+testID+"/manifest.json", manifestJSON(f, goodManifest()))
	f.Add("backups/x/manifest.json", []byte(`{"id":"x","object":"../../x"}`))
	f.Add("m", []byte(`[`))
	withAttachment := goodManifest()
	withAttachment.Attachments = []backup.Attachment{goodAttachment(0, "token")}
	f.Add("backups/"+testID+"/manifest.json", manifestJSON(f, withAttachment))
	f.Fuzz(func(t *testing.T, name string, b []byte) {
		m, err := backup.ParseManifest(name, bytes.NewReader(b))
		if err != nil {
			if !errors.Is(err, backup.ErrCorrupt) {
				t.Fatalf("unexpected error class: %v", err)
			}
			return
		}
		if !strings.HasPrefix(m.Object, "backups/"+m.ID+"/") || repo.CheckName(m.Object) != nil || name != "backups/"+m.ID+"/manifest.json" {
			t.Fatalf("accepted manifest %q at %q with object %q", m.ID, name, m.Object)
		}
		for _, a := range m.Attachments {
			if !strings.HasPrefix(a.Object, "backups/"+m.ID+"/attachments/") || repo.CheckName(a.Object) != nil || strings.Contains(a.Name, "/") {
				t.Fatalf("accepted attachment %q with object %q", a.Name, a.Object)
			}
		}
	})
}

// FuzzParseSegment: any bytes at any name are a segment manifest or
// ErrCorrupt, never a panic; an accepted one's data object lies in its own
// directory under logs/, and its revisions are consistent.
func FuzzParseSegment(f *testing.F) {
	good := `{"name":"logs/00000000000000000005-00000000000000000007-0a1b2c3d/","first":5,"last":7,"events":4,` +
		`"object":"logs/00000000000000000005-00000000000000000007-0a1b2c3d/segment.log.zst","compression":"zstd",` +
		`"sha256":"` + strings.Repeat("ab", 32) + `","storedSha256":"` + strings.Repeat("cd", 32) + `","size":10,"storedSize":9}`
	f.Add("logs/00000000000000000005-00000000000000000007-0a1b2c3d/manifest.json", []byte(good))
	f.Add("logs/00000000000000000005-00000000000000000007-0a1b2c3d/manifest.json", []byte(strings.Replace(good, "segment.log.zst", "../../x", 1)))
	f.Add("logs/x/manifest.json", []byte(`{"name":"logs/x/","gap":true,"first":3,"last":1}`))
	f.Add("m", []byte(`[`))
	f.Fuzz(func(t *testing.T, name string, b []byte) {
		s, err := backup.ParseSegment(name, bytes.NewReader(b))
		if err != nil {
			if !errors.Is(err, backup.ErrCorrupt) {
				t.Fatalf("unexpected error class: %v", err)
			}
			return
		}
		if name != s.Name+"manifest.json" || !strings.HasPrefix(s.Name, "logs/") || repo.CheckName(s.Name+"manifest.json") != nil {
			t.Fatalf("accepted segment %q at %q", s.Name, name)
		}
		if s.First < 1 || s.Last < s.First-1 {
			t.Fatalf("accepted revisions %d..%d", s.First, s.Last)
		}
		if s.Object != "" && (!strings.HasPrefix(s.Object, s.Name) || repo.CheckName(s.Object) != nil) {
			t.Fatalf("accepted segment %q with object %q", s.Name, s.Object)
		}
	})
}
