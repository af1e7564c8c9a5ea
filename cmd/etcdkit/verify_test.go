package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/etcdkit/etcdkit/internal/testetcd"
	"github.com/etcdkit/etcdkit/verify"
)

// TestVerifyCLI: a clean snapshot and data dir exit 0 in every format; a
// damaged snapshot prints its report and exits 5 with one line on stderr.
func TestVerifyCLI(t *testing.T) {
	p, _ := testetcd.LoadedProcess(t, "3.7", testetcd.LoadSpec{Keys: 200, Rounds: 2, Seed: 8})
	snap := testetcd.SaveSnapshot(t, p)
	p.Stop()
	for _, format := range []string{"simple", "json", "table", "fields"} {
		out, errOut, code := runCLI("verify", "snapshot", snap, "-w", format)
		if code != 0 || errOut != "" || !strings.Contains(out, "sha256") {
			t.Fatalf("%s: exit %d, stderr %q, stdout %q", format, code, errOut, out)
		}
	}
	out, errOut, code := runCLI("verify", "data-dir", p.DataDir, "-w", "json")
	var r verify.Report
	if code != 0 || errOut != "" || json.Unmarshal([]byte(out), &r) != nil || len(r.Problems) != 0 || len(r.Checks) < 8 {
		t.Fatalf("data-dir: exit %d, stderr %q, stdout %q", code, errOut, out)
	}

	damaged := filepath.Join(t.TempDir(), "damaged.db")
	testetcd.CopyFile(t, snap, damaged)
	testetcd.FlipByte(t, damaged, -1)
	out, errOut, code = runCLI("verify", "snapshot", damaged)
	if code != exitCorrupt || strings.Count(errOut, "\n") != 1 || !strings.Contains(errOut, "CORRUPT") || !strings.Contains(out, "corrupt: [sha256 trailer]") {
		t.Fatalf("damaged: exit %d, stderr %q, stdout %q", code, errOut, out)
	}
	expectFailure(t, []string{"verify", "data-dir", t.TempDir()}, exitInput, "not an etcd data dir")
	expectFailure(t, []string{"verify", "snapshot"}, exitUsage, "expected one snapshot FILE")
}
