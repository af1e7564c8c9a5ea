package main

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/etcdkit/etcdkit/cluster"
	"github.com/etcdkit/etcdkit/internal/testetcd"
	"github.com/etcdkit/etcdkit/rollingdefrag"
	"github.com/etcdkit/etcdkit/save"
)

// TestOnlineEnv: the connection comes from ETCDCTL_* variables alone, with
// client certificates and auth, as etcdctl reads them.
func TestOnlineEnv(t *testing.T) {
	certs := testetcd.NewCerts(t)
	m := testetcd.StartSingle(t, testetcd.WithClientTLS(certs))
	testetcd.EnableAuth(t, testetcd.NewTLSClient(t, certs, m.ClientURL), "pw")
	for k, v := range map[string]string{
		"ETCDCTL_ENDPOINTS": m.ClientURL, "ETCDCTL_CACERT": certs.CA, "ETCDCTL_CERT": certs.ClientCert,
		"ETCDCTL_KEY": certs.ClientKey, "ETCDCTL_USER": "root", "ETCDCTL_PASSWORD": "pw",
	} {
		t.Setenv(k, v)
	}
	out, errOut, code := runCLI("status", "-w", "json")
	var st []cluster.MemberStatus
	if code != 0 || json.Unmarshal([]byte(out), &st) != nil || len(st) != 1 || !st[0].IsLeader || st[0].Name != "m0" {
		t.Fatalf("status: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if out, errOut, code := runCLI("health"); code != 0 {
		t.Fatalf("health: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	t.Setenv("ETCDCTL_PASSWORD", "wrong")
	expectFailure(t, []string{"health"}, exitUnavailable, "")
	t.Setenv("ETCDCTL_PASSWORD", "pw")

	// Without the CA the error names the certificate's problem, not only
	// a deadline.
	t.Setenv("ETCDCTL_CACERT", "")
	expectFailure(t, []string{"alarm", "list", "--dial-timeout", "500ms", "--command-timeout", "1s"}, exitUnavailable, "x509")
	// Skipping the check works, and says so on stderr.
	out, errOut, code = runCLI("alarm", "list", "--insecure-skip-tls-verify")
	if code != 0 || !strings.Contains(errOut, "Warning: --insecure-skip-tls-verify") || strings.Count(errOut, "\n") != 1 {
		t.Fatalf("insecure: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

// TestOnlineCommands runs save, compact (with the backup guard), a dry-run
// rolling defrag and alarm list through the CLI against a real member.
func TestOnlineCommands(t *testing.T) {
	m := testetcd.StartSingle(t)
	cli := m.Client(t)
	for i := range 30 {
		if _, err := cli.Put(testetcd.Ctx(t, 10*time.Second), fmt.Sprintf("k%d", i%3), "v"); err != nil {
			t.Fatal(err)
		}
	}
	ep := []string{"--endpoints", m.ClientURL}
	file := filepath.Join(t.TempDir(), "backup.db")
	out, errOut, code := runCLI(append([]string{"snapshot", "save", file, "-w", "json"}, ep...)...)
	var man save.Manifest
	if code != 0 || json.Unmarshal([]byte(out), &man) != nil || man.Revision < 30 || man.MemberName != m.Name {
		t.Fatalf("save: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	for range 10 {
		cli.Put(testetcd.Ctx(t, 10*time.Second), "k", "v")
	}
	expectFailure(t, append([]string{"compact", "--keep-revisions", "2", "--backup", file}, ep...), exitRefused, "newest backup")
	expectFailure(t, append([]string{"compact", "--keep-revisions", "2", "--revision", "3"}, ep...), exitUsage, "exactly one")
	if out, errOut, code := runCLI(append([]string{"compact", "--keep-revisions", "2", "--backup", file, "--force", "--physical"}, ep...)...); code != 0 {
		t.Fatalf("compact: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	out, errOut, code = runCLI(append([]string{"defrag", "--dry-run", "--rule", "dbSize > 0", "-w", "json"}, ep...)...)
	var res []rollingdefrag.MemberResult
	if code != 0 || json.Unmarshal([]byte(out), &res) != nil || len(res) != 1 || res[0].Action != rollingdefrag.WouldDefragment {
		t.Fatalf("defrag: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if out, errOut, code := runCLI(append([]string{"alarm", "list"}, ep...)...); code != 0 || out != "" {
		t.Fatalf("alarm list: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	expectFailure(t, []string{"status", "--endpoints", fmt.Sprintf("127.0.0.1:%d", testetcd.FreePort(t)), "--dial-timeout", "200ms", "--command-timeout", "300ms"}, exitUnavailable, "")
}
