package main

import (
	"encoding/json"
	"path/filepath"
	"testing"
	"time"

	"github.com/etcdkit/etcdkit/defrag"
	"github.com/etcdkit/etcdkit/internal/testetcd"
)

// TestDefragCLI: offline defrag through the CLI, its output and its exit
// codes.
func TestDefragCLI(t *testing.T) {
	m := testetcd.StartSingle(t)
	if _, err := testetcd.Load(testetcd.Ctx(t, time.Minute), m.Client(t), testetcd.LoadSpec{Keys: 300, Rounds: 3, Seed: 4}); err != nil {
		t.Fatal(err)
	}
	expectFailure(t, []string{"defrag", "--data-dir", m.DataDir, "--timeout", "200ms"}, exitInUse, "db is in use by another process")
	m.Stop()
	expectFailure(t, []string{"defrag", "--data-dir", m.DataDir, "--db", m.DBPath()}, exitUsage, "give one of --data-dir and --db")
	expectFailure(t, []string{"defrag", "--rule", "dbSize >"}, exitUsage, "bad defrag rule")
	expectFailure(t, []string{"defrag", "--db", filepath.Join(t.TempDir(), "none")}, exitInput, "none")

	out, errOut, code := runCLI("defrag", "--data-dir", m.DataDir, "-w", "json")
	var res defrag.Result
	if code != 0 || errOut != "" || json.Unmarshal([]byte(out), &res) != nil {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if res.Path != m.DBPath() || res.After == 0 || res.After > res.Before {
		t.Errorf("result %+v", res)
	}
}
