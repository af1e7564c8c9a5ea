package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/etcdkit/etcdkit/internal/testetcd"
)

// TestInspectParity: inspect get prints what etcdctl get prints from the
// server that holds the same data, and history, leases, members and auth
// what etcdctl watch, lease, member list and auth/user/role get print (see
// readParityChecks), for data written by etcd 3.5, 3.6 and
// 3.7 (several prefixes, overwrites, deletes, txns, leases, a compaction
// mid-history), read from a snapshot file, from the stopped member's data
// dir and from a backup in a repository, in every format and with every
// flag. The header's cluster_id and member_id are the one difference (0:
// a db does not say which member answers); they are left out of the
// comparison. The inputs are unchanged afterwards.
func TestInspectParity(t *testing.T) {
	for _, line := range testetcd.Versions {
		t.Run("etcd-"+line, func(t *testing.T) {
			p, loaded := testetcd.LoadedProcess(t, line, testetcd.SmallSpec)
			snap := testetcd.SaveSnapshot(t, p)
			mid := fmt.Sprint(loaded.CompactRevision + (loaded.Revision-loaded.CompactRevision)/2)
			cases := [][]string{
				{"", "--prefix"},
				{"/registry/", "--prefix", "--keys-only"},
				{"/app/", "--prefix", "--limit", "3"},
				{"", "--prefix", "--sort-by", "MODIFY", "--order", "DESCEND", "--limit", "7"},
				{"", "--prefix", "--sort-by", "VERSION"},
				{"", "--prefix", "--sort-by", "CREATE", "--order", "ASCEND"},
				{"/k/", "--prefix", "--sort-by", "VALUE", "--order", "DESCEND"},
				{"/locks/", "--prefix", "--rev", mid},
				{"", "--prefix", "--rev", fmt.Sprint(loaded.CompactRevision)},
				{"/k/", "--from-key", "--limit", "4"},
				{"/app/", "/k/"},
				{"/nope"},
			}
			type run struct{ args, want []string }
			var runs []run
			for _, c := range cases {
				for _, format := range []string{"simple", "json", "fields"} {
					args := append(append([]string{"get"}, c...), "-w", format)
					runs = append(runs, run{args: args})
				}
			}
			runs = append(runs,
				run{args: []string{"get", "", "--prefix", "--count-only", "-w", "fields"}},
				run{args: []string{"get", "/app/", "--prefix", "--print-value-only"}})
			for i := range runs {
				out := testetcd.Run(t, p.Bins.Etcdctl, append([]string{"--endpoints", p.ClientURL}, runs[i].args...)...)
				runs[i].want = []string{out}
			}
			// Errors: a compacted and a future revision.
			_, compactedErr, err := testetcd.RunErr(p.Bins.Etcdctl, "--endpoints", p.ClientURL, "get", "a", "--rev", fmt.Sprint(loaded.CompactRevision-1))
			if err == nil || !strings.Contains(compactedErr, "required revision has been compacted") {
				t.Fatalf("etcdctl below the compaction: %v %q", err, compactedErr)
			}
			more := readParityChecks(t, p, loaded, snap)
			repo := filepath.Join(t.TempDir(), "repo")
			if out, errOut, code := runCLI("backup", "create", "--repo", repo, "--endpoints", p.ClientURL); code != 0 {
				t.Fatalf("backup create: exit %d %q %q", code, out, errOut)
			}
			p.Stop()
			sources := map[string][]string{
				"snapshot": {"--db", snap},
				"data dir": {"--data-dir", p.DataDir},
				"backup":   {"--repo", repo, "--backup", "latest"},
			}
			before := map[string][32]byte{snap: testetcd.FileSum(t, snap), p.DBPath(): testetcd.FileSum(t, p.DBPath())}
			for name, src := range sources {
				for _, r := range runs {
					args := append(append([]string{"inspect"}, r.args...), src...)
					got, errOut, code := runCLI(args...)
					if code != 0 {
						t.Fatalf("%s: %q: exit %d, stderr %q", name, args, code, errOut)
					}
					if !sameGetOutput(r.args, got, r.want[0]) {
						t.Fatalf("%s: %q\n got: %s\nwant: %s", name, args, got, r.want[0])
					}
				}
				for _, c := range more {
					args := append(append([]string{"inspect"}, c.args...), src...)
					got, errOut, code := runCLI(args...)
					if code != 0 || errOut != "" {
						t.Fatalf("%s: %q: exit %d, stderr %q", name, args, code, errOut)
					}
					if err := c.check(got); err != nil {
						t.Fatalf("%s: %q: %v", name, args, err)
					}
				}
				expectFailure(t, append([]string{"inspect", "history", "", "--prefix", "--rev", fmt.Sprint(loaded.CompactRevision - 1)}, src...), exitInput, "required revision has been compacted")
				expectFailure(t, append([]string{"inspect", "get", "a", "--rev", fmt.Sprint(loaded.CompactRevision - 1)}, src...), exitInput, "required revision has been compacted")
				expectFailure(t, append([]string{"inspect", "get", "a", "--rev", fmt.Sprint(loaded.Revision + 100)}, src...), exitInput, "required revision is a future revision")
			}
			// A data dir's WAL and .snap files give the same members.
			got, errOut, code := runCLI("inspect", "members", "--from", "log", "--data-dir", p.DataDir)
			if code != 0 || errOut != "" {
				t.Fatalf("members --from log: exit %d, stderr %q", code, errOut)
			}
			for _, c := range more {
				if c.args[0] == "members" && len(c.args) == 1 {
					if err := c.check(got); err != nil {
						t.Fatalf("members --from log: %v", err)
					}
				}
			}
			for path, sum := range before {
				if testetcd.FileSum(t, path) != sum {
					t.Errorf("%s changed", path)
				}
			}
		})
	}
}

// sameGetOutput compares inspect get's output with etcdctl's, leaving out
// the header's cluster_id and member_id.
func sameGetOutput(args []string, got, want string) bool {
	if strings.Contains(strings.Join(args, " "), "-w json") {
		var g, w map[string]any
		if json.Unmarshal([]byte(got), &g) != nil || json.Unmarshal([]byte(want), &w) != nil {
			return false
		}
		for _, m := range []map[string]any{g, w} {
			if h, ok := m["header"].(map[string]any); ok {
				delete(h, "cluster_id")
				delete(h, "member_id")
			}
		}
		return reflect.DeepEqual(g, w)
	}
	drop := func(s string) string {
		var keep []string
		for _, l := range strings.Split(s, "\n") {
			if !strings.HasPrefix(l, `"ClusterID"`) && !strings.HasPrefix(l, `"MemberID"`) {
				keep = append(keep, l)
			}
		}
		return strings.Join(keep, "\n")
	}
	return drop(got) == drop(want)
}

// TestInspectGetRefuses: etcdctl's refusals, and a source that names no
// input or two.
func TestInspectGetRefuses(t *testing.T) {
	db := filepath.Join(t.TempDir(), "x.db")
	testetcd.WriteFile(t, db, []byte("x"))
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"inspect", "get", "--db", db}, "needs one argument"},
		{[]string{"inspect", "get", "a", "--prefix", "--from-key", "--db", db}, "cannot be set at the same time"},
		{[]string{"inspect", "get", "a", "--keys-only", "--count-only", "-w", "fields", "--db", db}, "cannot be set at the same time"},
		{[]string{"inspect", "get", "a", "--count-only", "--db", db}, "only for `--write-out=fields`"},
		{[]string{"inspect", "get", "a", "--print-value-only", "-w", "json", "--db", db}, "only for `--write-out=simple`"},
		{[]string{"inspect", "get", "a", "--sort-by", "SIZE", "--db", db}, "bad sort target"},
		{[]string{"inspect", "get", "a"}, "give one source"},
		{[]string{"inspect", "get", "a", "--db", db, "--data-dir", os.TempDir()}, "give one source"},
	} {
		expectFailure(t, tc.args, exitUsage, tc.want)
	}
}
