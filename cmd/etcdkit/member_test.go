package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/internal/testetcd"
)

// TestMemberReplace: a 3-member cluster under write load loses a member
// (killed, its data dir deleted); member replace adds the new member as a
// learner and removes the dead one, prints how to start it, is safe to run
// again, and with --wait promotes it once it has caught up. The cluster
// ends with 3 voters, every acknowledged write, and one HashKV on all
// members. Wrong input is refused with one line; member list prints what
// etcdctl prints.
func TestMemberReplace(t *testing.T) {
	cl := testetcd.StartCluster(t, 3)
	cli := cl.Client(t)
	var (
		mu    sync.Mutex
		acked []string
		stop  = make(chan struct{})
		wg    sync.WaitGroup
	)
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			k := fmt.Sprintf("/acked/%06d", i)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			if _, err := cli.Put(ctx, k, "v"); err == nil {
				mu.Lock()
				acked = append(acked, k)
				mu.Unlock()
			}
			cancel()
			time.Sleep(5 * time.Millisecond)
		}
	})
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	}()
	time.Sleep(300 * time.Millisecond)
	dead := cl.Members[2]
	dead.Stop()
	if err := os.RemoveAll(dead.DataDir); err != nil {
		t.Fatal(err)
	}
	eps := strings.Join(cl.Endpoints()[:2], ",")
	newPeer := fmt.Sprintf("http://127.0.0.1:%d", testetcd.FreePort(t))
	expectFailure(t, []string{"member", "replace", "nope", "--peer-urls", newPeer, "--endpoints", eps}, exitInput, "no such member")
	expectFailure(t, []string{"member", "replace", cl.Members[1].Name, "--peer-urls", newPeer, "--endpoints", eps}, exitRefused, "answers on")

	replace := []string{"member", "replace", dead.Name, "--peer-urls", newPeer, "--endpoints", eps}
	out, errOut, code := runCLI(replace...)
	if code != 0 || !strings.Contains(errOut, "added "+dead.Name) || !strings.Contains(errOut, "removed "+dead.Name) {
		t.Fatalf("replace: exit %d\n%s\n%s", code, out, errOut)
	}
	m := regexp.MustCompile(`ETCD_INITIAL_CLUSTER="([^"]+)"`).FindStringSubmatch(out)
	if m == nil || strings.Count(m[1], "=") != 3 || !strings.Contains(m[1], dead.Name+"="+newPeer) || strings.Contains(m[1], dead.PeerURL) {
		t.Fatalf("start settings: %q", out)
	}
	// Again: the learner is reused, nothing is added twice.
	if out, errOut, code := runCLI(replace...); code != 0 || !strings.Contains(errOut, "already in the cluster") {
		t.Fatalf("replace again: exit %d\n%s\n%s", code, out, errOut)
	}
	cl.Join(t, dead.Name, newPeer, m[1])
	if out, errOut, code := runCLI(append(replace, "--wait", "60s")...); code != 0 || !strings.Contains(out, "is a voting member") {
		t.Fatalf("replace --wait: exit %d\n%s\n%s", code, out, errOut)
	}
	close(stop)
	wg.Wait()

	ctx := testetcd.Ctx(t, time.Minute)
	list, err := cli.MemberList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	voters := 0
	for _, mb := range list.Members {
		if !mb.IsLearner && mb.Name != "" {
			voters++
		}
	}
	if len(list.Members) != 3 || voters != 3 {
		t.Fatalf("members after the replace: %v", list.Members)
	}
	resp, err := cli.Get(ctx, "/acked/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, kv := range resp.Kvs {
		have[string(kv.Key)] = true
	}
	for _, k := range acked {
		if !have[k] {
			t.Fatalf("acknowledged write %s lost (%d acknowledged)", k, len(acked))
		}
	}
	var hashes []uint32
	for _, ep := range cl.Endpoints() {
		if ep == dead.ClientURL {
			continue
		}
		h, err := cli.HashKV(ctx, ep, resp.Header.Revision)
		if err != nil {
			t.Fatalf("hashkv %s: %v", ep, err)
		}
		hashes = append(hashes, h.Hash)
	}
	if len(hashes) != 3 || hashes[0] != hashes[1] || hashes[1] != hashes[2] {
		t.Fatalf("HashKV per member: %v", hashes)
	}

	// member list: etcdctl's output.
	all := strings.Join(cl.Endpoints()[:2], ",")
	got, errOut, code := runCLI("member", "list", "--endpoints", all)
	want := testetcd.Run(t, testetcd.Binaries(t, "3.7").Etcdctl, "--endpoints", all, "member", "list")
	if code != 0 || got != want {
		t.Fatalf("member list: exit %d %q\n got %q\nwant %q", code, errOut, got, want)
	}
	gotJSON, _, _ := runCLI("member", "list", "--endpoints", all, "-w", "json")
	wantJSON := testetcd.Run(t, testetcd.Binaries(t, "3.7").Etcdctl, "--endpoints", all, "member", "list", "-w", "json")
	var g, w struct{ Members []map[string]any }
	if json.Unmarshal([]byte(gotJSON), &g) != nil || json.Unmarshal([]byte(wantJSON), &w) != nil || fmt.Sprint(g.Members) != fmt.Sprint(w.Members) {
		t.Fatalf("member list -w json:\n got %s\nwant %s", gotJSON, wantJSON)
	}

	// member add (learner) and remove print etcdctl's lines (etcd takes
	// one learner at a time).
	urlA, urlB := fmt.Sprintf("http://127.0.0.1:%d", testetcd.FreePort(t)), fmt.Sprintf("http://127.0.0.1:%d", testetcd.FreePort(t))
	remove := func(addOut string) {
		t.Helper()
		id := regexp.MustCompile(`Member ([0-9a-f ]{16}) added`).FindStringSubmatch(addOut)
		if id == nil {
			t.Fatalf("no member ID in %q", addOut)
		}
		out, errOut, code := runCLI("member", "remove", strings.TrimSpace(id[1]), "--endpoints", all)
		if code != 0 || !regexp.MustCompile(`^Member [0-9a-f ]{16} removed from cluster [0-9a-f ]{16}\n$`).MatchString(out) {
			t.Fatalf("member remove: exit %d %q %q", code, out, errOut)
		}
	}
	ours, errOut, code := runCLI("member", "add", "extra-a", "--peer-urls", urlA, "--endpoints", all)
	if code != 0 {
		t.Fatalf("member add: exit %d %q", code, errOut)
	}
	remove(ours)
	theirs := testetcd.Run(t, testetcd.Binaries(t, "3.7").Etcdctl, "--endpoints", all, "member", "add", "extra-b", "--learner", "--peer-urls", urlB)
	remove(theirs)
	norm := func(s string) string {
		// IDs print as %16x: a leading zero digit becomes a space.
		s = regexp.MustCompile(`(Member|cluster) +[0-9a-f]{1,16}\b`).ReplaceAllString(s, "$1 ID")
		s = strings.NewReplacer("extra-a", "NEW", "extra-b", "NEW", urlA, "URL", urlB, "URL").Replace(s)
		lines := strings.Split(s, "\n")[:7]
		for i, l := range lines {
			// Members come in ID order, and the new member's ID differs.
			if v, ok := strings.CutPrefix(l, "ETCD_INITIAL_CLUSTER="); ok {
				parts := strings.Split(strings.Trim(v, `"`), ",")
				sort.Strings(parts)
				lines[i] = "ETCD_INITIAL_CLUSTER=" + strings.Join(parts, ",")
			}
		}
		return strings.Join(lines, "\n")
	}
	if norm(ours) != norm(theirs) {
		t.Fatalf("member add:\n got %q\nwant %q", norm(ours), norm(theirs))
	}
}

// TestMemberReplaceResumes: a replace killed right after it removed the
// dead member (the cluster holds its marker, no learner yet) continues
// when run again: the new member is added as a learner under the old name.
func TestMemberReplaceResumes(t *testing.T) {
	cl := testetcd.StartCluster(t, 3)
	cli := cl.Client(t)
	ctx := testetcd.Ctx(t, time.Minute)
	dead := cl.Members[2]
	dead.Stop()
	list, err := cli.MemberList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var deadID uint64
	for _, m := range list.Members {
		if m.Name == dead.Name {
			deadID = m.ID
		}
	}
	// What the first run did before it was killed.
	if _, err := cli.Put(ctx, "__etcdkit/member-replace/"+dead.Name, dead.Name); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.MemberRemove(ctx, deadID); err != nil {
		t.Fatal(err)
	}
	newPeer := fmt.Sprintf("http://127.0.0.1:%d", testetcd.FreePort(t))
	eps := strings.Join(cl.Endpoints()[:2], ",")
	out, errOut, code := runCLI("member", "replace", dead.Name, "--peer-urls", newPeer, "--endpoints", eps)
	if code != 0 || !strings.Contains(errOut, "added "+dead.Name) || strings.Contains(errOut, "removed") {
		t.Fatalf("resumed replace: exit %d\n%s\n%s", code, out, errOut)
	}
	list, err = cli.MemberList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	learners := 0
	for _, m := range list.Members {
		if m.IsLearner && len(m.PeerURLs) == 1 && m.PeerURLs[0] == newPeer {
			learners++
		}
	}
	if len(list.Members) != 3 || learners != 1 {
		t.Fatalf("members after the resumed replace: %v", list.Members)
	}
}
