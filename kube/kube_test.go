package kube_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apiserver/pkg/storage/value"
	"sigs.k8s.io/yaml"

	"github.com/etcdkit/etcdkit/inspect"
	"github.com/etcdkit/etcdkit/internal/k8stest"
	"github.com/etcdkit/etcdkit/kube"
)

// fixture is the Kubernetes fixture in a stopped etcd's db, opened.
type fixture struct {
	*k8stest.Fixture
	src *inspect.Opened
	dec *kube.Decoder
}

func newFixture(t *testing.T) fixture {
	f, db := k8stest.Build(t)
	src, err := inspect.Source{File: db, LockTimeout: time.Second}.Open(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	d, err := kube.LoadEncryptionConfig(f.Config)
	if err != nil {
		t.Fatal(err)
	}
	return fixture{Fixture: f, src: src, dec: &kube.Decoder{Catalog: kube.NewCatalog(), Decrypter: d}}
}

func TestKubernetesFixture(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	if _, err := f.dec.LoadCatalog(ctx, f.src, 0); err != nil {
		t.Fatal(err)
	}

	t.Run("get decodes every object as written", func(t *testing.T) {
		latest := f.Latest()
		seen := map[string]bool{}
		for path, v := range latest {
			prefix := path[:strings.LastIndexByte(path, '/')]
			if strings.Count(path, "/") >= 2 && !strings.HasPrefix(path, "apiextensions") {
				prefix = prefix[:strings.LastIndexByte(prefix, '/')] // drop the namespace
			}
			r := f.dec.Catalog.ByPrefix(prefix)
			ref, _ := kube.ParseKey("/registry/", []byte("/registry/"+path))
			var got []kube.Object
			_, err := f.dec.Get(ctx, f.src, kube.Query{Resource: r, Namespace: ref.Namespace, Name: ref.Name}, func(o kube.Object) error {
				got = append(got, o)
				return nil
			})
			if err != nil {
				t.Fatalf("%s: %v", path, err)
			}
			if len(got) != 1 {
				t.Fatalf("%s: got %d objects", path, len(got))
			}
			o := got[0]
			seen[path] = true
			if o.ModRevision != v.Rev {
				t.Errorf("%s: mod revision %d, want %d", path, o.ModRevision, v.Rev)
			}
			switch {
			case path == f.Unknown:
				if !errors.Is(o.Problem, kube.ErrUnknownType) || o.APIVersion != "future.example.io/v1" || o.Kind != "Gizmo" || o.Size == 0 {
					t.Errorf("unknown type: %+v", o)
				}
				continue
			case v.Encryption == "kms:vault":
				if !errors.Is(o.Problem, kube.ErrKMS) || o.Encryption == nil || o.Encryption.Key != "vault" {
					t.Errorf("kms: %+v", o)
				}
				continue
			}
			if o.Problem != nil {
				t.Fatalf("%s: %v", path, o.Problem)
			}
			if want := v.MustWant(t); !apiequality.Semantic.DeepEqual(o.Obj, want) {
				t.Errorf("%s: decoded\n%#v\nwant\n%#v", path, o.Obj, want)
			}
			if (o.Encryption != nil) != (v.Encryption != "") {
				t.Errorf("%s: encryption %v, want %q", path, o.Encryption, v.Encryption)
			}
		}
		if len(seen) != len(latest) || len(latest) < 25 {
			t.Errorf("checked %d of %d objects", len(seen), len(latest))
		}
	})

	t.Run("a listing is every live object of the resource, in key order", func(t *testing.T) {
		for _, tc := range []struct{ resource, ns string }{{"cm", ""}, {"configmaps", "ns-a"}, {"deploy", ""}, {"secrets", "ns-a"}, {"wg", ""}, {"no", "ns-a"}, {"svc", ""}, {"ep", "ns-a"}, {"ing", ""}} {
			r, err := f.dec.Catalog.Lookup(tc.resource)
			if err != nil {
				t.Fatal(err)
			}
			var got, want []string
			for path := range f.Latest() {
				ref, _ := kube.ParseKey("/registry/", []byte("/registry/"+path))
				if ref.Prefix == r.Prefix && (tc.ns == "" || ref.Namespace == "" || ref.Namespace == tc.ns) {
					want = append(want, "/registry/"+path)
				}
			}
			sort.Strings(want)
			_, err = f.dec.Get(ctx, f.src, kube.Query{Resource: r, Namespace: tc.ns}, func(o kube.Object) error {
				got = append(got, o.Key)
				return nil
			})
			if err != nil || len(want) == 0 || !reflect.DeepEqual(got, want) {
				t.Errorf("%s -n %q: %v, %v; want %v", tc.resource, tc.ns, got, err, want)
			}
		}
	})

	t.Run("an older revision gives the version live then; a compacted one is refused", func(t *testing.T) {
		r, _ := f.dec.Catalog.Lookup("deployments.apps")
		var got []kube.Object
		_, err := f.dec.Get(ctx, f.src, kube.Query{Resource: r, Namespace: "ns-a", Name: "web", Rev: f.Mid}, func(o kube.Object) error {
			got = append(got, o)
			return nil
		})
		if err != nil || len(got) != 1 || !apiequality.Semantic.DeepEqual(got[0].Obj, f.MidVersion.MustWant(t)) {
			t.Fatalf("at %d: %v %v", f.Mid, got, err)
		}
		_, err = f.dec.Get(ctx, f.src, kube.Query{Resource: r, Rev: f.Compacted - 1}, func(kube.Object) error { return nil })
		if !errors.Is(err, inspect.ErrCompacted) {
			t.Fatalf("below the compaction: %v", err)
		}
	})

	t.Run("history is every stored version and the deletion", func(t *testing.T) {
		for _, path := range []string{"deployments/ns-a/web", "configmaps/ns-a/settings", "configmaps/ns-a/old", "example.com/widgets/ns-a/w1"} {
			ref, _ := kube.ParseKey("/registry/", []byte("/registry/"+path))
			var got []kube.Version
			_, err := f.dec.History(ctx, f.src, kube.Query{Resource: f.dec.Catalog.ByPrefix(ref.Prefix), Namespace: ref.Namespace, Name: ref.Name}, func(v kube.Version) error {
				got = append(got, v)
				return nil
			})
			want := f.Versions[path]
			if err != nil || len(got) != len(want) {
				t.Fatalf("%s: %d versions, %v; want %d", path, len(got), err, len(want))
			}
			for i, w := range want {
				g := got[i]
				if g.Deleted != w.Deleted || g.ModRevision != w.Rev {
					t.Errorf("%s #%d: deleted %v at %d, want %v at %d", path, i, g.Deleted, g.ModRevision, w.Deleted, w.Rev)
				}
				if !w.Deleted && !apiequality.Semantic.DeepEqual(g.Obj, w.MustWant(t)) {
					t.Errorf("%s #%d: %v", path, i, g.Obj)
				}
			}
		}
	})

	t.Run("without the encryption config, encrypted values say how they are encrypted", func(t *testing.T) {
		d := &kube.Decoder{Catalog: f.dec.Catalog}
		r, _ := d.Catalog.Lookup("secret")
		problems := map[string]string{}
		_, err := d.Get(ctx, f.src, kube.Query{Resource: r}, func(o kube.Object) error {
			if o.Problem != nil {
				problems[o.Ref.Name] = o.Problem.Error()
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		for name, want := range map[string]string{"cbc": `aescbc:v1 key "cbc-key"`, "cbc-old": `aescbc:v1 key "cbc-old"`, "gcm": `aesgcm:v1 key "gcm-key"`, "box": `secretbox:v1 key "box-key"`, "kms": "KMS"} {
			if !strings.Contains(problems[name], want) {
				t.Errorf("%s: %q, want it to name %s", name, problems[name], want)
			}
		}
		if _, ok := problems["plain"]; ok || len(problems) != 5 {
			t.Errorf("problems: %v", problems)
		}
	})

	t.Run("summary counts objects, revisions and history by resource and namespace", func(t *testing.T) {
		s, err := f.dec.Summarize(ctx, f.src, 0)
		if err != nil {
			t.Fatal(err)
		}
		type count struct{ objects, revisions, deletions int64 }
		want := map[string]count{}
		for path, vs := range f.Versions {
			ref, _ := kube.ParseKey("/registry/", []byte("/registry/"+path))
			k := f.dec.Catalog.ByPrefix(ref.Prefix).String() + " " + ref.Namespace
			c := want[k]
			c.revisions += int64(len(vs))
			if vs[len(vs)-1].Deleted {
				c.deletions++
			} else {
				c.objects++
			}
			want[k] = c
		}
		got := map[string]count{}
		for _, u := range s.Rows {
			got[u.Resource+" "+u.Namespace] = count{u.Objects, u.Revisions, u.Deletions}
			if u.HistoryBytes != u.RevisionBytes-u.Bytes || u.Bytes <= 0 {
				t.Errorf("%s: sizes %+v", u.Resource, u)
			}
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("summary\n%v\nwant\n%v", got, want)
		}
		if got["deployments.apps ns-a"].revisions != 3 || s.NonKubernetes.Revisions != 0 {
			t.Errorf("deployments: %+v, non-kubernetes %+v", got["deployments.apps ns-a"], s.NonKubernetes)
		}
	})

	t.Run("extract writes what kubectl apply takes, atomically", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "out")
		rep, err := f.dec.Extract(ctx, f.src, kube.ExtractOptions{Dir: dir, Namespaces: []string{"ns-a"}, IncludeSecrets: true})
		if !errors.Is(err, kube.ErrIncomplete) || len(rep.Failed) != 1 || !strings.Contains(rep.Failed[0], "gizmos") {
			t.Fatalf("extract: %v %+v", err, rep)
		}
		tree, err := k8stest.ReadTree(dir)
		if err != nil {
			t.Fatal(err)
		}
		files := map[string]map[string]any{}
		for rel, f := range tree {
			var m map[string]any
			if err := yaml.Unmarshal(f.Data, &m); err != nil {
				t.Fatalf("%s: %v", rel, err)
			}
			files[rel] = m
			if strings.Contains(rel, "/secrets/") != (f.Mode.Perm() == 0o600) {
				t.Errorf("%s: mode %v", rel, f.Mode)
			}
		}
		var names []string
		for n := range files {
			names = append(names, n)
		}
		sort.Strings(names)
		want := []string{
			"_cluster/namespaces/ns-a.yaml",
			"ns-a/configmaps/settings.yaml",
			"ns-a/deployments.apps/web.yaml",
			"ns-a/endpoints/web.yaml",
			"ns-a/ingresses.networking.k8s.io/web.yaml",
			"ns-a/pods/debug.yaml",
			"ns-a/secrets/cbc-old.yaml", "ns-a/secrets/cbc.yaml", "ns-a/secrets/gcm.yaml", "ns-a/secrets/plain.yaml",
			"ns-a/services/web.yaml",
			"ns-a/widgets.example.com/w1.yaml",
		}
		if !reflect.DeepEqual(names, want) {
			t.Fatalf("files\n%v\nwant\n%v", names, want)
		}
		d := files["ns-a/deployments.apps/web.yaml"]
		md := d["metadata"].(map[string]any)
		for _, f := range []string{"uid", "resourceVersion", "creationTimestamp", "generation"} {
			if _, ok := md[f]; ok {
				t.Errorf("deployment keeps metadata.%s", f)
			}
		}
		if _, ok := d["status"]; ok || d["apiVersion"] != "apps/v1" || d["kind"] != "Deployment" || md["name"] != "web" || md["namespace"] != "ns-a" {
			t.Errorf("deployment: %v", d)
		}
		if spec := files["ns-a/services/web.yaml"]["spec"].(map[string]any); spec["clusterIP"] != nil || spec["selector"] == nil {
			t.Errorf("service spec: %v", spec)
		}
		var s corev1.Secret
		b, _ := yaml.Marshal(files["ns-a/secrets/gcm.yaml"])
		if err := yaml.Unmarshal(b, &s); err != nil || string(s.Data["password"]) != "gcm-secret" {
			t.Errorf("decrypted secret: %v %v", s.Data, err)
		}
		if _, err := f.dec.Extract(ctx, f.src, kube.ExtractOptions{Dir: dir}); !errors.Is(err, kube.ErrExtractDir) {
			t.Errorf("extract into an existing dir: %v", err)
		}
		leftovers, _ := filepath.Glob(filepath.Join(filepath.Dir(dir), ".*"))
		if len(leftovers) != 0 {
			t.Errorf("leftovers: %v", leftovers)
		}
	})

	t.Run("a failed extract leaves no directory", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "out")
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := f.dec.Extract(cctx, f.src, kube.ExtractOptions{Dir: dir}); !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled extract: %v", err)
		}
		if entries, _ := os.ReadDir(filepath.Dir(dir)); len(entries) != 0 {
			t.Errorf("left %v", entries)
		}
	})
}

// The decryption reads exactly what k8s.io/apiserver's transformers write:
// every provider, loaded from an EncryptionConfiguration by kube-apiserver's
// own code, on values of many sizes (block boundaries for CBC) and with the
// etcd key as authenticated data for GCM; a changed byte or another key is
// refused.
func TestDecryptMatchesKubeAPIServer(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	all := k8stest.EncryptionConfig("aescbc", "aesgcm", "secretbox", "identity")
	path := filepath.Join(dir, "all.yaml")
	if err := os.WriteFile(path, []byte(all), 0o600); err != nil {
		t.Fatal(err)
	}
	d, err := kube.LoadEncryptionConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	key := []byte("/registry/secrets/ns/name")
	for _, p := range []string{"aescbc", "aescbc/rotated", "aesgcm", "secretbox"} {
		tr, err := k8stest.Transformer(ctx, dir, k8stest.EncryptionConfig(p))
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range []int{0, 1, 15, 16, 17, 31, 32, 1000} {
			plain := append([]byte("k8s\x00"), []byte(strings.Repeat("x", n))...)
			stored, err := tr.TransformToStorage(ctx, plain, value.DefaultContext(key))
			if err != nil {
				t.Fatal(err)
			}
			got, err := d.Decrypt(key, stored)
			if err != nil || string(got) != string(plain) {
				t.Fatalf("%s, %d bytes: %q, %v", p, n, got, err)
			}
			bad := append([]byte(nil), stored...)
			bad[len(bad)-1] ^= 1
			if got, err := d.Decrypt(key, bad); err == nil && string(got) == string(plain) {
				t.Errorf("%s: a changed byte still decrypts", p)
			}
			if p == "aesgcm" {
				if _, err := d.Decrypt([]byte("/registry/secrets/ns/other"), stored); !errors.Is(err, kube.ErrEncrypted) {
					t.Errorf("aesgcm under another key: %v", err)
				}
			}
		}
	}
}

func TestEncryptionConfigErrors(t *testing.T) {
	dir := t.TempDir()
	for name, text := range map[string]string{
		"not yaml":    "{{{",
		"wrong kind":  "apiVersion: v1\nkind: ConfigMap\n",
		"no keys":     "kind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n  - identity: {}\n",
		"bad base64":  "kind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n  - aescbc:\n      keys:\n      - name: k\n        secret: '***'\n",
		"short key":   "kind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n  - aesgcm:\n      keys:\n      - name: k\n        secret: YWJj\n",
		"box key len": "kind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n  - secretbox:\n      keys:\n      - name: k\n        secret: MDEyMzQ1Njc4OWFiY2RlZg==\n",
	} {
		p := filepath.Join(dir, strings.ReplaceAll(name, " ", "-"))
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := kube.LoadEncryptionConfig(p); !errors.Is(err, kube.ErrEncryptionConfig) || !strings.Contains(err.Error(), p) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestLookup(t *testing.T) {
	yes := true
	c := kube.NewCatalog(kube.Resource{Group: "example.com", Resource: "widgets", Kind: "Widget", Singular: "widget", ShortNames: []string{"wg"}, Prefix: "example.com/widgets", Namespaced: &yes})
	for _, tc := range []struct{ name, want, prefix string }{
		{"cm", "configmaps", "configmaps"},
		{"ConfigMap", "configmaps", "configmaps"},
		{"configmap", "configmaps", "configmaps"},
		{"po", "pods", "pods"},
		{"pods.v1", "pods", "pods"},
		{"svc", "services", "services/specs"},
		{"ep", "endpoints", "services/endpoints"},
		{"no", "nodes", "minions"},
		{"rc", "replicationcontrollers", "controllers"},
		{"deploy", "deployments.apps", "deployments"},
		{"deployments.apps", "deployments.apps", "deployments"},
		{"deployments.v1.apps", "deployments.apps", "deployments"},
		{"deployments.extensions", "deployments.extensions", "deployments"},
		{"ing", "ingresses.networking.k8s.io", "ingress"},
		{"ingress", "ingresses.networking.k8s.io", "ingress"},
		{"events", "events", "events"},
		{"cj", "cronjobs.batch", "cronjobs"},
		{"clusterrole", "clusterroles.rbac.authorization.k8s.io", "clusterroles"},
		{"crd", "customresourcedefinitions.apiextensions.k8s.io", "apiextensions.k8s.io/customresourcedefinitions"},
		{"leases", "leases.coordination.k8s.io", "leases"},
		{"wg", "widgets.example.com", "example.com/widgets"},
		{"widgets.example.com", "widgets.example.com", "example.com/widgets"},
		{"Widget", "widgets.example.com", "example.com/widgets"},
		{"widgets.v1.example.com", "widgets.example.com", "example.com/widgets"},
	} {
		r, err := c.Lookup(tc.name)
		if err != nil || r.String() != tc.want || r.Prefix != tc.prefix {
			t.Errorf("%s: %s under %q, %v; want %s under %q", tc.name, r, r.Prefix, err, tc.want, tc.prefix)
		}
	}
	for _, bad := range []string{"gadgets", "widgets.other.com", "cm.apps", ""} {
		if r, err := c.Lookup(bad); !errors.Is(err, kube.ErrResource) {
			t.Errorf("%q: %v, %v", bad, r, err)
		}
	}
}

func TestParseKey(t *testing.T) {
	for _, tc := range []struct {
		key  string
		want kube.Ref
		ok   bool
	}{
		{"/registry/pods/ns/name", kube.Ref{Prefix: "pods", Namespace: "ns", Name: "name"}, true},
		{"/registry/namespaces/ns", kube.Ref{Prefix: "namespaces", Name: "ns"}, true},
		{"/registry/services/specs/ns/web", kube.Ref{Prefix: "services/specs", Namespace: "ns", Name: "web"}, true},
		{"/registry/services/endpoints/ns/web", kube.Ref{Prefix: "services/endpoints", Namespace: "ns", Name: "web"}, true},
		{"/registry/example.com/widgets/ns/w", kube.Ref{Prefix: "example.com/widgets", Namespace: "ns", Name: "w"}, true},
		{"/registry/apiextensions.k8s.io/customresourcedefinitions/w.example.com", kube.Ref{Prefix: "apiextensions.k8s.io/customresourcedefinitions", Name: "w.example.com"}, true},
		{"/registry/clusterroles/system:controller:x", kube.Ref{Prefix: "clusterroles", Name: "system:controller:x"}, true},
		{"/registry/health", kube.Ref{Prefix: "health"}, true},
		{"/registry/a/b/c/d", kube.Ref{Prefix: "a", Namespace: "b", Name: "c/d"}, true},
		{"/other/pods/ns/name", kube.Ref{}, false},
		{"/registry/", kube.Ref{}, false},
	} {
		got, ok := kube.ParseKey("/registry/", []byte(tc.key))
		if got != tc.want || ok != tc.ok {
			t.Errorf("%s: %+v %v, want %+v %v", tc.key, got, ok, tc.want, tc.ok)
		}
	}
}

// Decode never fails on a value: garbage, truncated protobuf and JSON
// come back with a Problem.
func TestDecodeHostileValues(t *testing.T) {
	d := &kube.Decoder{Catalog: kube.NewCatalog()}
	for _, v := range []string{"", "garbage", "k8s\x00", "k8s\x00\xff\xff", "{", "{\"kind\":1}", "k8s:enc:", "k8s:enc:aescbc:v1:k:", "k8s:enc:kms:v1:x:abc"} {
		o, ok := d.Decode(&mvccpb.KeyValue{Key: []byte("/registry/configmaps/ns/x"), Value: []byte(v), ModRevision: 3})
		if !ok || o.Problem == nil || o.Obj != nil {
			t.Errorf("%q: %+v", v, o)
		}
	}
}

// YAML prints what sigs.k8s.io/yaml (kubectl's printer) prints, byte for
// byte: typed objects and the numbers, strings and nulls JSON can hold.
func TestYAMLMatchesKubectl(t *testing.T) {
	f, _ := k8stest.Build(t)
	values := []any{
		map[string]any{"int": 1000000, "big": uint64(1) << 63, "neg": -5, "float": 1.5, "tiny": 1e-7, "huge": 1e300, "zero": 0.0},
		map[string]any{"s": []any{"yes", "no", "on", "1", "1.0", "null", "~", "", " x", "a: b", "line\nbreak", "#c", "- d", "0x1F", "2024-01-01"}},
		map[string]any{"nil": nil, "t": true, "nested": map[string]any{"b": []any{}, "a": map[string]any{}}},
		[]any{1, "two", 3.25},
	}
	for _, vs := range f.Versions {
		for _, v := range vs {
			if v.Obj != nil {
				values = append(values, v.Obj)
			}
			if v.JSON != nil {
				values = append(values, v.JSON)
			}
		}
	}
	for i, v := range values {
		got, err := kube.YAML(v)
		want, werr := yaml.Marshal(v)
		if err != nil || werr != nil || string(got) != string(want) {
			t.Errorf("value %d: %v %v\n%s\nwant\n%s", i, err, werr, got, want)
		}
	}
}
