package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/etcdkit/etcdkit/internal/testetcd"
)

// parityCheck is one inspect invocation (without its source flags) and
// the test of its output against what etcdctl printed from the server.
type parityCheck struct {
	args  []string
	check func(got string) error
}

// readParityChecks runs etcdctl against the live server p (whose data the
// snapshot snap holds) and returns the checks every source of the same
// data must pass: history against etcdctl watch --rev, leases against
// lease list and lease timetolive --keys, members against member list,
// auth against auth status, user get and role get.
func readParityChecks(t *testing.T, p *testetcd.Process, loaded testetcd.Loaded, snap string) []parityCheck {
	ctl := func(args ...string) string {
		return testetcd.Run(t, p.Bins.Etcdctl, append([]string{"--endpoints", p.ClientURL}, args...)...)
	}
	var checks []parityCheck
	equal := func(want string) func(string) error {
		return func(got string) error {
			if got != want {
				return fmt.Errorf("got:\n%s\nwant:\n%s", got, want)
			}
			return nil
		}
	}

	// history: etcdctl watch replays from --rev; inspect on the snapshot
	// says how many events to wait for.
	compact := fmt.Sprint(loaded.CompactRevision)
	mid := fmt.Sprint(loaded.CompactRevision + (loaded.Revision-loaded.CompactRevision)/2)
	for _, c := range []struct{ ours, watch []string }{
		{[]string{"", "--prefix"}, []string{"--rev", compact, "--prefix", ""}},
		{[]string{"/app/", "--prefix", "--from-rev", compact}, []string{"--rev", compact, "--prefix", "/app/"}},
		{[]string{"/locks/", "--prefix", "--rev", mid}, []string{"--rev", mid, "--prefix", "/locks/"}},
		{[]string{testetcd.Key(7), "--from-rev", mid}, []string{"--rev", mid, testetcd.Key(7)}},
		{[]string{"/app/", "/k/", "--from-rev", mid}, []string{"--rev", mid, "/app/", "/k/"}},
	} {
		for _, format := range []string{"simple", "json"} {
			args := append(append([]string{"history"}, c.ours...), "-w", format)
			ours, errOut, code := runCLI(append(append([]string{"inspect"}, args...), "--db", snap)...)
			if code != 0 {
				t.Fatalf("inspect %q: exit %d: %s", args, code, errOut)
			}
			want := watchOutput(t, p, format, countEvents(t, format, ours), append([]string{"watch", "-w", format}, c.watch...))
			if format == "simple" {
				checks = append(checks, parityCheck{args, equal(want)})
				continue
			}
			checks = append(checks, parityCheck{args, func(got string) error { return sameWatchJSON(got, want) }})
		}
	}
	// --to-rev cuts the same replay at a revision.
	midRev := loaded.CompactRevision + (loaded.Revision-loaded.CompactRevision)/2
	full, errOut, code := runCLI("inspect", "history", "/app/", "--prefix", "-w", "json", "--db", snap)
	if code != 0 {
		t.Fatalf("inspect history: exit %d: %s", code, errOut)
	}
	var upToMid string
	for _, l := range strings.SplitAfter(full, "\n") {
		var r struct {
			Events []struct {
				Kv struct {
					ModRevision int64 `json:"mod_revision"`
				} `json:"kv"`
			}
		}
		if l != "" {
			if err := json.Unmarshal([]byte(l), &r); err != nil {
				t.Fatalf("%q: %v", l, err)
			}
			if r.Events[0].Kv.ModRevision <= midRev {
				upToMid += l
			}
		}
	}
	if upToMid == "" || upToMid == full {
		t.Fatalf("the replay of /app/ has no events on both sides of revision %d", midRev)
	}
	checks = append(checks, parityCheck{[]string{"history", "/app/", "--prefix", "-w", "json", "--to-rev", mid}, equal(upToMid)})

	// leases: IDs, granted TTLs and attached keys as the server has them.
	type lease struct {
		ttl  string
		keys []string
	}
	serverLeases := map[string]lease{}
	ttlRE := regexp.MustCompile(`^lease ([0-9a-f]{16}) granted with TTL\((\d+)s\), remaining\((-?\d+)s\), attached keys\(\[(.*)\]\)$`)
	parse := func(line string) (id string, l lease, ok bool) {
		m := ttlRE.FindStringSubmatch(line)
		if m == nil {
			return "", l, false
		}
		l = lease{ttl: m[2], keys: strings.Fields(m[4])}
		sort.Strings(l.keys)
		return m[1], l, true
	}
	list := strings.Split(strings.TrimSpace(ctl("lease", "list")), "\n")
	for _, id := range list[1:] {
		line := strings.TrimSpace(ctl("lease", "timetolive", "--keys", id))
		got, l, ok := parse(line)
		if !ok || got != id {
			t.Fatalf("etcdctl lease timetolive: %q", line)
		}
		serverLeases[id] = l
	}
	if len(serverLeases) != len(loaded.Leases) {
		t.Fatalf("the server lists %d leases, the loader granted %d", len(serverLeases), len(loaded.Leases))
	}
	checks = append(checks, parityCheck{[]string{"leases", "--keys"}, func(got string) error {
		lines := strings.Split(strings.TrimSpace(got), "\n")
		if lines[0] != list[0] {
			return fmt.Errorf("first line %q, etcdctl lease list says %q", lines[0], list[0])
		}
		ours := map[string]lease{}
		for _, line := range lines[1:] {
			id, l, ok := parse(line)
			if !ok {
				return fmt.Errorf("line %q", line)
			}
			ours[id] = l
		}
		if !reflect.DeepEqual(ours, serverLeases) {
			return fmt.Errorf("leases %v, the server's %v", ours, serverLeases)
		}
		return nil
	}})

	// members and auth: etcdctl's own printers.
	checks = append(checks, parityCheck{[]string{"members"}, equal(ctl("member", "list"))})
	wantMembers := ctl("member", "list", "-w", "json")
	checks = append(checks, parityCheck{[]string{"members", "-w", "json"}, func(got string) error {
		var g, w struct{ Members []map[string]any }
		if err := json.Unmarshal([]byte(got), &g); err != nil {
			return err
		}
		if err := json.Unmarshal([]byte(wantMembers), &w); err != nil {
			return err
		}
		if len(g.Members) == 0 || !reflect.DeepEqual(g.Members, w.Members) {
			return fmt.Errorf("members %v, etcdctl's %v", g.Members, w.Members)
		}
		return nil
	}})
	auth := ctl("auth", "status") + ctl("user", "get", "alice") + ctl("user", "get", "bob") + ctl("role", "get", "reader") + ctl("role", "get", "writer")
	checks = append(checks, parityCheck{[]string{"auth"}, equal(auth)})
	return checks
}

// countEvents counts the events of inspect history's output.
func countEvents(t *testing.T, format, out string) int {
	if format == "simple" {
		return strings.Count(out, "\n") / 3
	}
	n := 0
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		var r struct{ Events []json.RawMessage }
		if l == "" {
			continue
		}
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatalf("history json line %q: %v", l, err)
		}
		n += len(r.Events)
	}
	return n
}

// watchOutput runs etcdctl watch until it has printed want events (the
// server replays a watch's history at once) and 300 ms more for any
// extra, or 15 s; then stops it and returns what it printed.
func watchOutput(t *testing.T, p *testetcd.Process, format string, want int, args []string) string {
	cmd := exec.Command(p.Bins.Etcdctl, append([]string{"--endpoints", p.ClientURL}, args...)...)
	cmd.Env = append(os.Environ(), "ETCDCTL_API=3")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var out bytes.Buffer
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(nil, 16<<20)
		for sc.Scan() {
			mu.Lock()
			out.Write(sc.Bytes())
			out.WriteByte('\n')
			mu.Unlock()
		}
	}()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		mu.Lock()
		s := out.String()
		mu.Unlock()
		if s != "" && countEvents(t, format, s) >= want {
			time.Sleep(300 * time.Millisecond)
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	_ = cmd.Process.Kill() // a watch runs until it is stopped
	<-done
	_ = cmd.Wait()
	return out.String()
}

// sameWatchJSON compares watch responses by their events and header
// revision: the server groups replayed events into responses as it
// likes, inspect history by revision.
func sameWatchJSON(got, want string) error {
	flatten := func(s string) (events []any, revs map[float64]bool, err error) {
		revs = map[float64]bool{}
		for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
			var r struct {
				Header map[string]any
				Events []any
			}
			if err := json.Unmarshal([]byte(l), &r); err != nil {
				return nil, nil, fmt.Errorf("%q: %w", l, err)
			}
			events = append(events, r.Events...)
			if rev, ok := r.Header["revision"].(float64); ok {
				revs[rev] = true
			}
		}
		return events, revs, nil
	}
	g, grevs, err := flatten(got)
	if err != nil {
		return err
	}
	w, wrevs, err := flatten(want)
	if err != nil {
		return err
	}
	if len(g) == 0 || !reflect.DeepEqual(g, w) || !reflect.DeepEqual(grevs, wrevs) {
		return fmt.Errorf("%d events (header revisions %v), etcdctl watch printed %d (%v)", len(g), grevs, len(w), wrevs)
	}
	return nil
}
