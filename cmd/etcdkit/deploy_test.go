package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/etcdkit/etcdkit/internal/testetcd"
	"github.com/etcdkit/etcdkit/scheduler"
)

// deployFile reads a file under deploy/.
func deployFile(t testing.TB, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(testetcd.RepoRoot(t), "deploy", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// tlsMember is a member serving clients over TLS with client certificates,
// as the deploy examples expect.
func tlsMember(t *testing.T) (*testetcd.Member, testetcd.Certs) {
	t.Helper()
	certs := testetcd.NewCerts(t)
	c := testetcd.StartCluster(t, 1, testetcd.WithClientTLS(certs))
	return c.Members[0], certs
}

// TestDeployExamples runs the configurations shipped in deploy/ through
// `scheduler --check` (and the CronJob's commands for real) against a TLS
// cluster and a local repository, with only the endpoint, certificate
// paths and repository replaced: every flag, schedule, retention and rule
// they use must be valid, and the jobs they list must be the ones checked.
func TestDeployExamples(t *testing.T) {
	m, certs := tlsMember(t)
	repoDir := t.TempDir()
	local := []string{"--endpoints=" + m.ClientURL, "--cacert=" + certs.CA, "--cert=" + certs.ClientCert, "--key=" + certs.ClientKey,
		"--repo=" + repoDir, "--metrics-addr=", "--check", "-w", "json"}

	checkOK := func(t *testing.T, args []string, jobs ...string) {
		t.Helper()
		out, errOut, code := runCLI(args...)
		if code != 0 {
			t.Fatalf("scheduler --check: exit %d, stderr %q, stdout %s", code, errOut, out)
		}
		var items []scheduler.CheckItem
		if err := json.Unmarshal([]byte(out), &items); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		got := map[string]scheduler.CheckItem{}
		for _, it := range items {
			got[it.Name] = it
		}
		for _, j := range append(jobs, "cluster", "repository") {
			it, ok := got[j]
			if !ok || !it.OK {
				t.Fatalf("check %q missing or failed: %+v", j, items)
			}
		}
		if it := got["backup"]; it.Next == nil {
			t.Fatalf("backup has no next run: %+v", it)
		}
		if !strings.Contains(got["cluster"].Detail, m.Name) {
			t.Fatalf("cluster check does not name the member: %q", got["cluster"].Detail)
		}
	}

	t.Run("kubernetes sidecar", func(t *testing.T) {
		var cs []struct{ Command []string }
		if err := yaml.Unmarshal([]byte(deployFile(t, "kubernetes/scheduler-sidecar.yaml")), &cs); err != nil || len(cs) != 1 {
			t.Fatalf("%v: %d containers", err, len(cs))
		}
		c := cs[0]
		if len(c.Command) < 2 || c.Command[0] != "/etcdkit" || c.Command[1] != "scheduler" {
			t.Fatalf("sidecar command %q", c.Command)
		}
		checkOK(t, append(c.Command[1:], local...), "backup", "compact", "defrag", "nospace")
	})

	t.Run("systemd config", func(t *testing.T) {
		unit := deployFile(t, "systemd/etcdkit-scheduler.service")
		if !strings.Contains(unit, "etcdkit scheduler --config /etc/etcdkit/scheduler.yaml") {
			t.Fatal("the unit does not run the scheduler with its configuration file")
		}
		path := filepath.Join(t.TempDir(), "scheduler.yaml")
		if err := os.WriteFile(path, []byte(systemdExampleConfig(t)), 0o600); err != nil {
			t.Fatal(err)
		}
		checkOK(t, append([]string{"scheduler", "--config", path}, local...), "backup", "compact", "defrag", "nospace")
	})

	t.Run("kubernetes cronjob", func(t *testing.T) {
		var job struct {
			Spec struct {
				JobTemplate struct {
					Spec struct {
						Template struct {
							Spec struct {
								Containers []struct {
									Args []string
									Env  []struct{ Name, Value string }
								}
							}
						}
					}
				} `yaml:"jobTemplate"`
			}
		}
		if err := yaml.Unmarshal([]byte(deployFile(t, "kubernetes/backup-cronjob.yaml")), &job); err != nil {
			t.Fatal(err)
		}
		c := job.Spec.JobTemplate.Spec.Template.Spec.Containers[0]
		local := map[string]string{"ETCDCTL_ENDPOINTS": m.ClientURL, "ETCDCTL_CACERT": certs.CA, "ETCDCTL_CERT": certs.ClientCert,
			"ETCDCTL_KEY": certs.ClientKey, "ETCDKIT_REPO": repoDir}
		for _, e := range c.Env {
			v, ok := local[e.Name]
			if !ok {
				t.Fatalf("the CronJob sets %s, which the test does not know to replace", e.Name)
			}
			t.Setenv(e.Name, v)
		}
		before := len(listBackups(t, repoDir))
		cmds := strings.Split(strings.Join(c.Args, " "), "&&")
		for _, cmd := range cmds {
			f := strings.Fields(cmd)
			if len(f) < 2 || f[0] != "/etcdkit" {
				t.Fatalf("CronJob command %q", cmd)
			}
			if out, errOut, code := runCLI(f[1:]...); code != 0 {
				t.Fatalf("%s: exit %d, stderr %q, stdout %s", cmd, code, errOut, out)
			}
		}
		if len(cmds) != 2 || len(listBackups(t, repoDir)) != before+1 {
			t.Fatalf("the CronJob's %d commands did not leave one more backup", len(cmds))
		}
	})
}

func listBackups(t *testing.T, repo string) []any {
	t.Helper()
	out, errOut, code := runCLI("backup", "list", "--repo", repo, "-w", "json")
	if code != 0 {
		t.Fatalf("backup list: exit %d, %s", code, errOut)
	}
	var l []any
	if err := json.Unmarshal([]byte(out), &l); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	return l
}

// TestSchedulerCheckFails: a bad configuration exits 2 before anything is
// contacted; an unreachable cluster exits 8 with the jobs still listed.
func TestSchedulerCheckFails(t *testing.T) {
	dir := t.TempDir()
	dead := "127.0.0.1:" + strconv.Itoa(testetcd.FreePort(t))
	live := testetcd.StartSingle(t).ClientURL
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"bad schedule", []string{"--endpoints", dead, "--repo", dir, "--backup-schedule", "61 * * * *"}, exitUsage, "backup-schedule"},
		{"bad rule", []string{"--endpoints", dead, "--defrag-schedule", "@daily", "--defrag-rule", "dbSizeFree >"}, exitUsage, "rule"},
		{"rule that is not a condition", []string{"--endpoints", dead, "--defrag-schedule", "@daily", "--defrag-rule", "dbSize"}, exitUsage, "not true or false"},
		{"bad compression", []string{"--endpoints", dead, "--repo", dir, "--backup-schedule", "@hourly", "--compression", "lz4"}, exitUsage, "lz4"},
		{"compaction without a policy", []string{"--endpoints", dead, "--compact-schedule", "@hourly"}, exitUsage, "compact-keep"},
		{"unreachable cluster", []string{"--endpoints", dead, "--repo", dir, "--backup-schedule", "@hourly", "--dial-timeout", "300ms", "--command-timeout", "500ms"}, exitUnavailable, "cluster"},
		{"unreachable repository", []string{"--endpoints", live, "--repo", "s3://nope?endpoint=http://" + dead, "--backup-schedule", "@hourly"}, exitUnavailable, "repository"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, code := runCLI(append([]string{"scheduler", "--check", "--metrics-addr="}, tc.args...)...)
			if code != tc.code || !strings.Contains(errOut, tc.want) || strings.Count(strings.TrimSpace(errOut), "\n") != 0 {
				t.Fatalf("exit %d (want %d), stderr %q (want one line naming %q)", code, tc.code, errOut, tc.want)
			}
			if tc.code == exitUnavailable && !strings.Contains(out, "backup") {
				t.Fatalf("the jobs are not listed when the cluster is down: %q", out)
			}
		})
	}
}
