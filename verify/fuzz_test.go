package verify

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"go.etcd.io/etcd/server/v3/etcdserver/api/snap"
	"go.uber.org/zap"
)

func testetcdGlob(t *testing.T, pattern string) []string {
	m, err := filepath.Glob(pattern)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// FuzzSnapFile: any bytes as a member's .snap file are reported as
// readable or as a problem of the "snap files" check, and the membership
// of a readable one decodes or fails with an error, never a panic. Seed: a
// real etcd .snap file (testdata/fuzz, from tools/fuzzseeds).
func FuzzSnapFile(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte("not a snapshot"))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, b []byte) {
		// A file that decodes is named for its term and index, so it
		// passes the name check and reaches the membership decoding.
		for _, old := range testetcdGlob(t, filepath.Join(dir, "*")) {
			os.Remove(old)
		}
		path := filepath.Join(dir, "0000000000000001-0000000000000001.snap")
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		if s, err := snap.Read(zap.NewNop(), path); err == nil {
			named := filepath.Join(dir, fmt.Sprintf("%016x-%016x.snap", s.GetMetadata().GetTerm(), s.GetMetadata().GetIndex()))
			if err := os.Rename(path, named); err != nil {
				t.Fatal(err)
			}
		}
		r := &Report{}
		good := r.checkSnaps(dir)
		if len(good)+len(r.Problems) != 1 {
			t.Fatalf("%d readable and %d problems for one file", len(good), len(r.Problems))
		}
		for _, s := range good {
			// An error is a fine outcome here; a panic is not.
			if _, err := snapMembers(s.snap); err != nil {
				t.Logf("membership: %v", err)
			}
		}
	})
}
