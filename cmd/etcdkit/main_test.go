package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/etcdkit/etcdkit/internal/testetcd"
)

func runCLI(args ...string) (stdout, stderr string, code int) {
	var o, e bytes.Buffer
	code = run(append([]string{"etcdkit"}, args...), &o, &e)
	return o.String(), e.String(), code
}

// TestOutputParity compares etcdkit's output with etcdutl 3.7's, byte for
// byte, in every output format, for snapshot status and hashkv.
func TestOutputParity(t *testing.T) {
	etcdutl := testetcd.Binaries(t, "3.7").Etcdutl
	p, loaded := testetcd.LoadedProcess(t, "3.6", testetcd.SmallSpec)
	snap := testetcd.SaveSnapshot(t, p)
	p.Stop()
	for _, format := range []string{"simple", "json", "table", "fields"} {
		t.Run("status-"+format, func(t *testing.T) {
			want := testetcd.Run(t, etcdutl, "snapshot", "status", "-w", format, snap)
			got, errOut, code := runCLI("snapshot", "status", snap, "-w", format)
			if code != 0 || got != want {
				t.Fatalf("exit %d, stderr %q\n got:\n%s\nwant:\n%s", code, errOut, got, want)
			}
		})
		t.Run("hashkv-"+format, func(t *testing.T) {
			rev := loaded.CompactRevision + 1
			cp := filepath.Join(t.TempDir(), "db")
			testetcd.CopyFile(t, p.DBPath(), cp)
			want := testetcd.Run(t, etcdutl, "hashkv", "--rev", itoa(rev), "-w", format, cp)
			got, errOut, code := runCLI("-w", format, "hashkv", "--rev", itoa(rev), p.DataDir)
			if code != 0 || got != want {
				t.Fatalf("exit %d, stderr %q\n got:\n%s\nwant:\n%s", code, errOut, got, want)
			}
		})
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// TestExitCodes checks the documented exit code and the one-line error that
// names the file for each kind of failure.
func TestExitCodes(t *testing.T) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.db")
	testetcd.WriteFile(t, garbage, bytes.Repeat([]byte("etcd"), 4096))

	m := testetcd.StartSingle(t)
	loaded, err := testetcd.Load(testetcd.Ctx(t, time.Minute), m.Client(t), testetcd.LoadSpec{Keys: 100, Rounds: 2, Seed: 5})
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name     string
		args     []string
		code     int
		contains string
	}{
		{"no args", []string{"snapshot", "status"}, exitUsage, "expected one"},
		{"bad format", []string{"-w", "yaml", "snapshot", "status", garbage}, exitUsage, "unsupported output format"},
		{"unknown flag", []string{"hashkv", "--bogus", garbage}, exitUsage, "bogus"},
		{"missing file", []string{"snapshot", "status", filepath.Join(dir, "nope.db")}, exitInput, "nope.db"},
		{"not bolt", []string{"snapshot", "status", garbage}, exitInput, "garbage.db: not a bolt database"},
		{"in use", []string{"hashkv", "--timeout", "200ms", m.DataDir}, exitInUse, "db is in use by another process"},
		{"bad rate limit", []string{"backup", "create", "--repo", filepath.Join(dir, "repo"), "--endpoints", m.ClientURL, "--rate-limit", "fast"}, exitUsage, "--rate-limit \"fast\""},
		{"rate limit too low", []string{"snapshot", "save", filepath.Join(dir, "s.db"), "--endpoints", m.ClientURL, "--rate-limit", "1KiB"}, exitUsage, "from 64KiB"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { expectFailure(t, tc.args, tc.code, tc.contains) })
	}

	m.Stop()
	// A real db cut in half, as an interrupted copy leaves it.
	truncated := filepath.Join(dir, "truncated.db")
	testetcd.CopyFile(t, m.DBPath(), truncated)
	os.Truncate(truncated, 256<<10) // well below the ~900 kB in use
	after := []struct {
		name     string
		args     []string
		code     int
		contains string
	}{
		{"truncated", []string{"snapshot", "status", truncated}, exitCorrupt, "truncated.db: damaged bolt file"},
		{"compacted rev", []string{"hashkv", "--rev", itoa(loaded.CompactRevision - 1), m.DataDir}, exitInput, "compacted"},
		{"future rev", []string{"hashkv", "--rev", itoa(loaded.Revision + 10), m.DataDir}, exitInput, "future revision"},
	}
	for _, tc := range after {
		t.Run(tc.name, func(t *testing.T) { expectFailure(t, tc.args, tc.code, tc.contains) })
	}
}

// expectFailure runs the CLI and checks the exit code, that stdout is empty
// and that stderr is exactly one line containing want.
func expectFailure(t *testing.T, args []string, wantCode int, want string) {
	t.Helper()
	out, errOut, code := runCLI(args...)
	if code != wantCode || !strings.Contains(errOut, want) || strings.Count(errOut, "\n") != 1 || out != "" {
		t.Fatalf("exit %d (want %d), stdout %q, stderr %q (want one line containing %q)", code, wantCode, out, errOut, want)
	}
}
