package main

import (
	"encoding/json"
	"testing"

	"github.com/etcdkit/etcdkit/cluster"
	"github.com/etcdkit/etcdkit/internal/testetcd"
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
}
