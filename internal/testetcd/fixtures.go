package testetcd

import (
	"crypto/sha256"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// SmallSpec is the data set the differential tests load: a few thousand keys,
// three rounds, a compaction after the first.
var SmallSpec = LoadSpec{Keys: 1500, Rounds: 3, Seed: 7}

// LoadedProcess starts the etcd binary of a release line, loads spec through
// it and returns the running member and what was loaded.
func LoadedProcess(t testing.TB, line string, spec LoadSpec) (*Process, Loaded) {
	t.Helper()
	p := StartProcess(t, Binaries(t, line), ProcessConfig{})
	p.WaitReady(t)
	loaded, err := Load(Ctx(t, 5*time.Minute), NewClient(t, p.ClientURL), spec)
	if err != nil {
		t.Fatalf("load etcd %s: %v", line, err)
	}
	return p, loaded
}

// SaveSnapshot writes a snapshot of the member with its own release's
// etcdctl (the file operators get from `etcdctl snapshot save`).
func SaveSnapshot(t testing.TB, p *Process) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "snap-"+p.Bins.Version+".db")
	Run(t, p.Bins.Etcdctl, "--endpoints", p.ClientURL, "snapshot", "save", path)
	return path
}

// FileSum returns the sha256 of a file, to prove a command did not change it.
func FileSum(t testing.TB, path string) [32]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	var s [32]byte
	copy(s[:], h.Sum(nil))
	return s
}

// CopyFile copies src to dst (for running a tool that may modify its input).
func CopyFile(t testing.TB, src, dst string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// Must(call())(t) returns the call's result, failing the test if its error
// is not nil: for calls whose result a test asserts on, so a failed call can
// never pass as a result.
func Must[T any](v T, err error) func(testing.TB) T {
	return func(t testing.TB) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

// WriteFile writes a test's input file (mode 0600), failing the test if it
// cannot.
func WriteFile(t testing.TB, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// FlipByte inverts the lowest bit of the byte at off in path (off < 0: the
// middle byte), in place: a one-bit damage.
func FlipByte(t testing.TB, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if off < 0 {
		off = Must(f.Stat())(t).Size() / 2
	}
	b := []byte{0}
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatalf("flip byte %d of %s: %v", off, path, err)
	}
	b[0] ^= 1
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatalf("flip byte %d of %s: %v", off, path, err)
	}
}
