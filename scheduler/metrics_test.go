package scheduler

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/etcdkit/etcdkit/internal/testetcd"
)

// registered is the name of every metric the scheduler exports.
func registered(t *testing.T) map[string]bool {
	m := newMetrics(&Scheduler{})
	names := map[string]bool{}
	fq := regexp.MustCompile(`fqName: "([^"]+)"`)
	for _, c := range m.collectors {
		ch := make(chan *prometheus.Desc, 16)
		go func() { c.Describe(ch); close(ch) }()
		for d := range ch {
			match := fq.FindStringSubmatch(d.String())
			if match == nil {
				t.Fatalf("no name in %s", d)
			}
			names[match[1]] = true
		}
	}
	return names
}

// queried is every etcdkit_ metric text mentions, histogram series folded
// into their metric.
func queried(text string, known map[string]bool) map[string]bool {
	out := map[string]bool{}
	for _, n := range regexp.MustCompile(`etcdkit_[a-z_]+`).FindAllString(text, -1) {
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if base := strings.TrimSuffix(n, suffix); base != n && known[base] {
				n = base
			}
		}
		out[n] = true
	}
	return out
}

// TestPrometheusArtifacts: the alerting rules pass promtool's check and
// their unit tests; the rules and the Grafana dashboard query only metrics
// the scheduler exports, and the dashboard shows every one of them.
func TestPrometheusArtifacts(t *testing.T) {
	dir := filepath.Join(testetcd.RepoRoot(t), "deploy", "prometheus")
	promtool := testetcd.Promtool(t)
	for _, args := range [][]string{{"check", "rules", "etcdkit-rules.yml"}, {"test", "rules", "etcdkit-rules.test.yml"}} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	known := registered(t)
	rules := string(testetcd.Must(os.ReadFile(filepath.Join(dir, "etcdkit-rules.yml")))(t))
	var dash struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(testetcd.Must(os.ReadFile(filepath.Join(dir, "etcdkit-dashboard.json")))(t), &dash); err != nil {
		t.Fatal(err)
	}
	var exprs []string
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			exprs = append(exprs, tg.Expr)
		}
	}
	inDash := queried(strings.Join(exprs, "\n"), known)
	for name, text := range map[string]map[string]bool{"rules": queried(rules, known), "dashboard": inDash} {
		for n := range text {
			if !known[n] {
				t.Errorf("the %s query %s, which the scheduler does not export", name, n)
			}
		}
	}
	var missing []string
	for n := range known {
		if !inDash[n] {
			missing = append(missing, n)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 || !known["etcdkit_job_duration_seconds"] || !known["etcdkit_drill_failures_total"] {
		t.Errorf("the dashboard lacks %v (of %d metrics)", missing, len(known))
	}
}
