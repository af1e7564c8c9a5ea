package main

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"sigs.k8s.io/yaml"

	"github.com/etcdkit/etcdkit/internal/k8stest"
)

// decodeStrict decodes JSON or YAML into the type its kind names,
// refusing unknown fields: what the API server would accept.
func decodeStrict(t *testing.T, b []byte) runtime.Object {
	t.Helper()
	obj, _, err := serializer.NewCodecFactory(k8stest.Scheme, serializer.EnableStrict).UniversalDeserializer().Decode(b, nil, nil)
	if err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
	return obj
}

// TestInspectK8s runs inspect k8s on a db and a data dir holding objects
// written as kube-apiserver writes them, and compares what it prints with
// the objects written, field by field.
func TestInspectK8s(t *testing.T) {
	f, db := k8stest.Build(t)
	dataDir := filepath.Dir(filepath.Dir(filepath.Dir(db)))
	enc := "--encryption-config=" + f.Config
	latest := f.Latest()
	for _, src := range [][]string{{"--db", db}, {"--data-dir", dataDir}} {
		k8s := func(args ...string) (string, string, int) {
			return runCLI(append(append([]string{"inspect", "k8s"}, args...), src...)...)
		}
		t.Run(src[0], func(t *testing.T) {
			out, errOut, code := k8s("get", "deploy", "web", "-n", "ns-a", "-o", "yaml")
			if code != 0 {
				t.Fatalf("get -o yaml: %d %s", code, errOut)
			}
			if got := decodeStrict(t, []byte(out)); !apiequality.Semantic.DeepEqual(got, latest["deployments/ns-a/web"].MustWant(t)) {
				t.Errorf("deployment:\n%s", out)
			}

			out, _, code = k8s("get", "deployments.apps", "web", "-n", "ns-a", "-o", "json", "--rev", fmt.Sprint(f.Mid))
			if got := decodeStrict(t, []byte(out)); code != 0 || !apiequality.Semantic.DeepEqual(got, f.MidVersion.MustWant(t)) {
				t.Errorf("at revision %d: %d\n%s", f.Mid, code, out)
			}

			// A listing prints a List, the same in JSON and YAML.
			jsonOut, _, code := k8s("get", "cm", "-A", "-o", "json")
			yamlOut, _, code2 := k8s("get", "configmaps", "-A", "-o", "yaml")
			var list struct {
				Kind  string
				Items []json.RawMessage
			}
			if code != 0 || code2 != 0 || json.Unmarshal([]byte(jsonOut), &list) != nil || list.Kind != "List" || len(list.Items) != 2 {
				t.Fatalf("list: %d %d\n%s", code, code2, jsonOut)
			}
			asJSON, err := yaml.YAMLToJSON([]byte(yamlOut))
			var a, b any
			if err != nil || json.Unmarshal(asJSON, &a) != nil || json.Unmarshal([]byte(jsonOut), &b) != nil || !apiequality.Semantic.DeepEqual(a, b) {
				t.Errorf("yaml and json lists differ: %v\n%s\n%s", err, yamlOut, jsonOut)
			}
			for i, path := range []string{"configmaps/ns-a/settings", "configmaps/ns-b/settings"} {
				if got := decodeStrict(t, list.Items[i]); !apiequality.Semantic.DeepEqual(got, latest[path].MustWant(t)) {
					t.Errorf("item %d: %s", i, list.Items[i])
				}
			}

			out, _, code = k8s("get", "po", "-A", "-o", "name")
			if code != 0 || out != "pod/debug\npod/web-5d4f-x1\npod/db-0\n" {
				t.Errorf("-o name: %d %q", code, out)
			}
			out, _, code = k8s("get", "no")
			if lines := strings.Split(strings.TrimSpace(out), "\n"); code != 0 || len(lines) != 2 || !strings.HasPrefix(lines[1], "node-1 ") {
				t.Errorf("nodes table: %d %q", code, out)
			}

			// Secrets: decrypted with the config; named as encrypted without.
			for _, name := range []string{"cbc", "cbc-old", "gcm", "box"} {
				ns := "ns-a"
				if name == "box" {
					ns = "ns-b"
				}
				out, errOut, code = k8s("get", "secret", name, "-n", ns, "-o", "yaml", enc)
				s, ok := decodeStrict(t, []byte(out)).(*corev1.Secret)
				if code != 0 || !ok || !apiequality.Semantic.DeepEqual(s, latest["secrets/"+ns+"/"+name].MustWant(t)) {
					t.Errorf("secret %s: %d %s %s", name, code, out, errOut)
				}
				out, errOut, code = k8s("get", "secret", name, "-n", ns, "-o", "yaml")
				if code != 0 || !strings.HasPrefix(out, "# /registry/secrets/") || !strings.Contains(errOut, "pass --encryption-config") {
					t.Errorf("secret %s without the config: %d %q %q", name, code, out, errOut)
				}
			}
			_, errOut, _ = k8s("get", "secret", "kms", "-n", "ns-b", "-o", "yaml", enc)
			if !strings.Contains(errOut, "KMS") || !strings.Contains(errOut, `"vault"`) {
				t.Errorf("kms secret: %q", errOut)
			}

			// Custom resources by their CRD's names.
			out, _, code = k8s("get", "wg", "w1", "-n", "ns-a", "-o", "json")
			var w map[string]any
			if code != 0 || json.Unmarshal([]byte(out), &w) != nil || w["spec"].(map[string]any)["size"] != float64(2) {
				t.Errorf("widget: %d %s", code, out)
			}

			// History: every stored version, and diffs.
			out, _, code = k8s("history", "deploy", "web", "-n", "ns-a")
			docs := strings.Split(out, "---\n")[1:]
			if code != 0 || len(docs) != 3 {
				t.Fatalf("history: %d %d docs\n%s", code, len(docs), out)
			}
			for i, d := range docs {
				v := f.Versions["deployments/ns-a/web"][i]
				if got := decodeStrict(t, []byte(d)).(*appsv1.Deployment); !apiequality.Semantic.DeepEqual(got, v.MustWant(t)) {
					t.Errorf("version %d:\n%s", i, d)
				}
			}
			out, _, code = k8s("history", "cm", "old", "-n", "ns-a", "--diff")
			if code != 0 || !strings.Contains(out, "(created)") || !strings.Contains(out, "(deleted)") {
				t.Errorf("history of a deleted object: %d\n%s", code, out)
			}
			out, _, _ = k8s("history", "cm", "settings", "-n", "ns-a", "--diff")
			if !strings.Contains(out, "+  mode: three") || !strings.Contains(out, "-  mode: two") {
				t.Errorf("history --diff:\n%s", out)
			}

			out, _, code = k8s("summary", "-w", "json", "--top", "0")
			var sum struct {
				Rows []struct {
					Resource, Namespace string
					Objects, Revisions  int64
				}
			}
			if code != 0 || json.Unmarshal([]byte(out), &sum) != nil || len(sum.Rows) < 15 {
				t.Fatalf("summary: %d %s", code, out)
			}
			for _, r := range sum.Rows {
				if r.Resource == "deployments.apps" && r.Namespace == "ns-a" && (r.Objects != 1 || r.Revisions != 3) {
					t.Errorf("summary row: %+v", r)
				}
			}

			// Extract: a tree kubectl apply takes; the undecodable object is
			// named and makes exit 3, the rest is written.
			dir := filepath.Join(t.TempDir(), "extract")
			_, errOut, code = k8s("extract", "-n", "ns-a", "--output-dir", dir, "--include-secrets", enc)
			if code != exitInput || !strings.Contains(errOut, "gizmos/ns-a/g1") || !strings.Contains(errOut, "wrote 12 objects") {
				t.Fatalf("extract: %d %s", code, errOut)
			}
			tree, err := k8stest.ReadTree(dir)
			var files []string
			for rel, f := range tree {
				files = append(files, rel)
				if strings.Contains(rel, "widgets") {
					continue
				}
				obj := decodeStrict(t, f.Data)
				m, err := meta.Accessor(obj)
				if err != nil || m.GetResourceVersion() != "" || m.GetUID() != "" || len(m.GetOwnerReferences()) != 0 {
					t.Errorf("%s keeps server fields: %s", rel, f.Data)
				}
			}
			sort.Strings(files)
			if err != nil || len(files) != 12 || files[0] != "_cluster/namespaces/ns-a.yaml" {
				t.Errorf("files: %v %v", files, err)
			}
			_, errOut, code = k8s("extract", "cm", "--output-dir", dir)
			if code != exitRefused {
				t.Errorf("extract into an existing dir: %d %s", code, errOut)
			}
			dir2 := filepath.Join(t.TempDir(), "cm")
			_, errOut, code = k8s("extract", "cm", "--output-dir", dir2)
			if n, _ := filepath.Glob(filepath.Join(dir2, "*", "configmaps", "*.yaml")); code != 0 || len(n) != 2 {
				t.Errorf("extract cm: %d %v %s", code, n, errOut)
			}
		})
	}

	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"get", "gadgets"}, exitUsage, `resource type "gadgets"`},
		{[]string{"get", "deploy", "nothere", "-n", "ns-a"}, exitInput, `"nothere" not found`},
		{[]string{"get", "deploy", "-o", "xml"}, exitUsage, "-o xml"},
		{[]string{"get", "deploy", "--rev", fmt.Sprint(f.Compacted - 1)}, exitInput, "compacted"},
		{[]string{"get", "secrets", "--encryption-config", db}, exitUsage, "encryption config"},
		{[]string{"history", "deploy"}, exitUsage, "RESOURCE NAME"},
		{[]string{"history", "deploy", "nothere"}, exitInput, "no stored version"},
		{[]string{"extract"}, exitUsage, "output-dir"},
	} {
		_, errOut, code := runCLI(append(append([]string{"inspect", "k8s"}, tc.args...), "--db", db)...)
		if code != tc.code || !strings.Contains(errOut, tc.want) || strings.Count(strings.TrimSpace(errOut), "\n") > 1 {
			t.Errorf("%v: exit %d, want %d; stderr %q, want %q", tc.args, code, tc.code, errOut, tc.want)
		}
	}
}
