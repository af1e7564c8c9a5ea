package testetcd

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// Versions are the etcd release lines etcdkit is tested against; the exact
// releases are pinned by the modules under tools/etcd.
var Versions = []string{"3.5", "3.6", "3.7"}

// Bins are the paths of one release's binaries.
type Bins struct {
	Version                string
	Etcd, Etcdctl, Etcdutl string
}

// RepoRoot is the directory holding etcdkit's go.mod.
func RepoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && bytes.Contains(b, []byte("module github.com/etcdkit/etcdkit\n")) {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("repository root not found")
		}
		dir = parent
	}
}

// BinDir is where "make etcd-bins" puts the binaries of one release line:
// $ETCDKIT_CACHE/etcd/v<line>/ (default ~/.cache/etcdkit).
func BinDir(line string) string {
	return filepath.Join(cacheDir(), "etcd", "v"+line)
}

// cacheDir is where the Makefile builds the test tools: $ETCDKIT_CACHE,
// default ~/.cache/etcdkit.
func cacheDir() string {
	if cache := os.Getenv("ETCDKIT_CACHE"); cache != "" {
		return cache
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".cache", "etcdkit")
}

// built remembers, per Makefile target, the outcome of building it once.
var built sync.Map // target -> *buildResult

type buildResult struct {
	once sync.Once
	err  error
}

// makeTarget runs `make TARGET` in the repository once per test binary and
// fails the test if it fails: tests build what they need, never skip.
func makeTarget(t testing.TB, target string) {
	t.Helper()
	root := RepoRoot(t)
	v, _ := built.LoadOrStore(target, &buildResult{})
	b := v.(*buildResult)
	b.once.Do(func() {
		if out, err := exec.Command("make", "-C", root, target).CombinedOutput(); err != nil {
			b.err = fmt.Errorf("make %s: %v\n%s", target, err, out)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
}

// Binaries returns the etcd, etcdctl and etcdutl binaries of a release line
// ("3.5", "3.6", "3.7"), building them with "make etcd-bins" when missing.
// It never skips: a test that needs them fails if they cannot be built.
func Binaries(t testing.TB, line string) Bins {
	t.Helper()
	dir := BinDir(line)
	b := Bins{Version: line, Etcd: filepath.Join(dir, "etcd"), Etcdctl: filepath.Join(dir, "etcdctl"), Etcdutl: filepath.Join(dir, "etcdutl")}
	if _, err := os.Stat(b.Etcdutl); err != nil {
		makeTarget(t, "etcd-bins")
	}
	for _, p := range []string{b.Etcd, b.Etcdctl, b.Etcdutl} {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("etcd %s binary missing after make etcd-bins: %v", line, err)
		}
	}
	return b
}

// Promtool returns Prometheus' promtool, building it with "make
// promtool-bin" when missing.
func Promtool(t testing.TB) string {
	t.Helper()
	p := filepath.Join(cacheDir(), "promtool", "promtool")
	if _, err := os.Stat(p); err != nil {
		makeTarget(t, "promtool-bin")
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("promtool missing after make promtool-bin: %v", err)
	}
	return p
}
