package k8stest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apiserver/pkg/storage/value"

	"github.com/etcdkit/etcdkit/internal/testetcd"
)

// Version is one write of the fixture: an object (typed, or a JSON map)
// or a deletion, at a revision.
type Version struct {
	Path    string // under the root: "pods/ns-a/web-0"
	Obj     runtime.Object
	JSON    map[string]any
	Rev     int64
	Deleted bool
	// Encryption is the provider and key that encrypted it ("" for none).
	Encryption string
}

// Fixture is what Write stored and what a reader must find.
type Fixture struct {
	// Versions of every path, oldest first, as the db still holds them
	// (versions below the compaction, other than a key's latest, gone).
	Versions map[string][]Version
	// Compacted is the compaction revision; Mid a revision between two
	// versions of deployments/ns-a/web (MidVersion is the one live at Mid).
	Compacted, Mid int64
	MidVersion     Version
	// Config is an EncryptionConfiguration file that decrypts every
	// encrypted secret but the KMS one.
	Config string
	// Unknown is the path of the value of a type no scheme knows.
	Unknown string
}

// Latest is the newest version of every path not deleted.
func (f *Fixture) Latest() map[string]Version {
	m := map[string]Version{}
	for p, vs := range f.Versions {
		if v := vs[len(vs)-1]; !v.Deleted {
			m[p] = v
		}
	}
	return m
}

var created = metav1.NewTime(time.Unix(1_700_000_000, 0))

func meta(ns, name string, labels map[string]string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID(fmt.Sprintf("uid-%s-%s", ns, name)), CreationTimestamp: created, Labels: labels, Generation: 1}
}

func deployment(ns, name string, replicas int32, image string) *appsv1.Deployment {
	labels := map[string]string{"app": name}
	return &appsv1.Deployment{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
		ObjectMeta: meta(ns, name, labels),
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas, Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: corev1.PodSpec{
				Containers: []corev1.Container{{Name: name, Image: image, Ports: []corev1.ContainerPort{{ContainerPort: 8080, Protocol: corev1.ProtocolTCP}}}},
			}},
		},
		Status: appsv1.DeploymentStatus{Replicas: replicas, ReadyReplicas: replicas, ObservedGeneration: 1},
	}
}

func configMap(ns, name string, data map[string]string) *corev1.ConfigMap {
	return &corev1.ConfigMap{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"}, ObjectMeta: meta(ns, name, nil), Data: data}
}

func secret(ns, name, v string) *corev1.Secret {
	return &corev1.Secret{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"}, ObjectMeta: meta(ns, name, nil),
		Type: corev1.SecretTypeOpaque, Data: map[string][]byte{"password": []byte(v)}}
}

func pod(ns, name, node string, owner *metav1.OwnerReference) *corev1.Pod {
	p := &corev1.Pod{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"}, ObjectMeta: meta(ns, name, map[string]string{"app": "web"}),
		Spec:   corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "web", Image: "nginx:1.27"}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.244.0.7"}}
	if owner != nil {
		p.OwnerReferences = []metav1.OwnerReference{*owner}
	}
	return p
}

// Write stores the fixture through cli under root, encrypting secrets with
// kube-apiserver's transformers (config files go to dir): namespaces, a
// node, a cluster role, pods (one owned by a ReplicaSet), deployments
// with several versions, config maps (one deleted), secrets in the clear
// and encrypted with aescbc (two keys), aesgcm and secretbox, a
// KMS-encrypted secret, a service and its endpoints, an ingress, a cron
// job, a CRD (JSON) and its custom resources, a value of an unknown
// type, and a compaction part-way.
func Write(ctx context.Context, cli *clientv3.Client, root, dir string) (*Fixture, error) {
	s := Store{Client: cli, Root: root}
	f := &Fixture{Versions: map[string][]Version{}, Unknown: "gizmos/ns-a/g1"}
	trs := map[string]value.Transformer{}
	for _, p := range []string{"aescbc", "aescbc/rotated", "aesgcm", "secretbox"} {
		tr, err := Transformer(ctx, dir, EncryptionConfig(p, "identity"))
		if err != nil {
			return nil, err
		}
		trs[p] = tr
	}
	// The reader's config lists every provider; kube-apiserver's loader
	// must take it too.
	all := EncryptionConfig("aescbc", "aesgcm", "secretbox", "identity")
	if _, err := Transformer(ctx, dir, all); err != nil {
		return nil, err
	}
	f.Config = filepath.Join(dir, "encryption-config.yaml")
	if err := os.WriteFile(f.Config, []byte(all), 0o600); err != nil {
		return nil, err
	}
	var err error
	put := func(path string, obj runtime.Object, enc string) {
		if err != nil {
			return
		}
		var rev int64
		rev, err = s.PutObject(ctx, path, obj, trs[enc])
		f.Versions[path] = append(f.Versions[path], Version{Path: path, Obj: obj, Rev: rev, Encryption: enc})
	}
	putJSON := func(path string, obj map[string]any) {
		if err != nil {
			return
		}
		var rev int64
		rev, err = s.PutJSON(ctx, path, obj)
		f.Versions[path] = append(f.Versions[path], Version{Path: path, JSON: obj, Rev: rev})
	}
	del := func(path string) {
		if err != nil {
			return
		}
		var rev int64
		rev, err = s.Delete(ctx, path)
		f.Versions[path] = append(f.Versions[path], Version{Path: path, Rev: rev, Deleted: true})
	}

	for _, ns := range []string{"ns-a", "ns-b"} {
		put("namespaces/"+ns, &corev1.Namespace{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"}, ObjectMeta: meta("", ns, nil),
			Spec: corev1.NamespaceSpec{Finalizers: []corev1.FinalizerName{corev1.FinalizerKubernetes}}, Status: corev1.NamespaceStatus{Phase: corev1.NamespaceActive}}, "")
	}
	put("minions/node-1", &corev1.Node{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Node"}, ObjectMeta: meta("", "node-1", map[string]string{"kubernetes.io/os": "linux"}),
		Spec: corev1.NodeSpec{PodCIDR: "10.244.0.0/24"}}, "")
	put("deployments/ns-a/web", deployment("ns-a", "web", 1, "nginx:1.25"), "")
	put("configmaps/ns-a/settings", configMap("ns-a", "settings", map[string]string{"mode": "one"}), "")
	put("configmaps/ns-a/gone-before", configMap("ns-a", "gone-before", map[string]string{"x": "y"}), "")
	del("configmaps/ns-a/gone-before")
	put("clusterroles/viewer", &rbacv1.ClusterRole{TypeMeta: metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "ClusterRole"}, ObjectMeta: meta("", "viewer", nil),
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list"}}}}, "")
	if err != nil {
		return nil, err
	}
	// Compact: gone-before leaves no trace; web, settings and viewer keep
	// their version at the compaction.
	f.Compacted = f.Versions["clusterroles/viewer"][0].Rev
	if _, err := cli.Compact(ctx, f.Compacted, clientv3.WithCompactPhysical()); err != nil {
		return nil, err
	}
	delete(f.Versions, "configmaps/ns-a/gone-before")

	put("deployments/ns-a/web", deployment("ns-a", "web", 2, "nginx:1.26"), "")
	f.Mid = f.Versions["deployments/ns-a/web"][1].Rev
	f.MidVersion = f.Versions["deployments/ns-a/web"][1]
	put("configmaps/ns-a/settings", configMap("ns-a", "settings", map[string]string{"mode": "two", "extra": "yes"}), "")
	put("configmaps/ns-a/old", configMap("ns-a", "old", map[string]string{"a": "b"}), "")
	put("configmaps/ns-b/settings", configMap("ns-b", "settings", map[string]string{"mode": "b"}), "")
	put("deployments/ns-b/api", deployment("ns-b", "api", 3, "api:2.0"), "")
	rsOwner := metav1.OwnerReference{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "web-5d4f", UID: "uid-ns-a-web-5d4f", Controller: ptr(true), BlockOwnerDeletion: ptr(true)}
	put("replicasets/ns-a/web-5d4f", &appsv1.ReplicaSet{TypeMeta: metav1.TypeMeta{APIVersion: "apps/v1", Kind: "ReplicaSet"}, ObjectMeta: func() metav1.ObjectMeta {
		m := meta("ns-a", "web-5d4f", map[string]string{"app": "web"})
		m.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "Deployment", Name: "web", UID: "uid-ns-a-web", Controller: ptr(true)}}
		return m
	}(), Spec: appsv1.ReplicaSetSpec{Replicas: ptr(int32(2)), Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}}}, "")
	put("pods/ns-a/web-5d4f-x1", pod("ns-a", "web-5d4f-x1", "node-1", &rsOwner), "")
	put("pods/ns-a/debug", pod("ns-a", "debug", "node-1", nil), "")
	put("pods/ns-b/db-0", pod("ns-b", "db-0", "node-1", nil), "")
	put("secrets/ns-a/plain", secret("ns-a", "plain", "in-the-clear"), "")
	put("secrets/ns-a/cbc", secret("ns-a", "cbc", "cbc-secret"), "aescbc")
	put("secrets/ns-a/cbc-old", secret("ns-a", "cbc-old", "cbc-old-secret"), "aescbc/rotated")
	put("secrets/ns-a/gcm", secret("ns-a", "gcm", "gcm-secret"), "aesgcm")
	put("secrets/ns-b/box", secret("ns-b", "box", "box-secret"), "secretbox")
	put("services/specs/ns-a/web", &corev1.Service{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Service"}, ObjectMeta: meta("ns-a", "web", nil),
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web"}, ClusterIP: "10.96.0.10", ClusterIPs: []string{"10.96.0.10"}, Type: corev1.ServiceTypeClusterIP,
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}}}}, "")
	put("services/endpoints/ns-a/web", &corev1.Endpoints{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Endpoints"}, ObjectMeta: meta("ns-a", "web", nil),
		Subsets: []corev1.EndpointSubset{{Addresses: []corev1.EndpointAddress{{IP: "10.244.0.7"}}, Ports: []corev1.EndpointPort{{Name: "http", Port: 8080, Protocol: corev1.ProtocolTCP}}}}}, "")
	put("ingress/ns-a/web", &networkingv1.Ingress{TypeMeta: metav1.TypeMeta{APIVersion: "networking.k8s.io/v1", Kind: "Ingress"}, ObjectMeta: meta("ns-a", "web", nil),
		Spec: networkingv1.IngressSpec{Rules: []networkingv1.IngressRule{{Host: "web.example.com"}}}}, "")
	put("cronjobs/ns-b/nightly", &batchv1.CronJob{TypeMeta: metav1.TypeMeta{APIVersion: "batch/v1", Kind: "CronJob"}, ObjectMeta: meta("ns-b", "nightly", nil),
		Spec: batchv1.CronJobSpec{Schedule: "0 3 * * *", JobTemplate: batchv1.JobTemplateSpec{Spec: batchv1.JobSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyOnFailure, Containers: []corev1.Container{{Name: "job", Image: "busybox"}}}}}}}}, "")
	putJSON("apiextensions.k8s.io/customresourcedefinitions/widgets.example.com", map[string]any{
		"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
		"metadata": map[string]any{"name": "widgets.example.com", "uid": "uid-crd", "creationTimestamp": "2023-11-14T22:13:20Z"},
		"spec": map[string]any{"group": "example.com", "scope": "Namespaced",
			"names":    map[string]any{"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList", "shortNames": []any{"wg"}},
			"versions": []any{map[string]any{"name": "v1", "served": true, "storage": true, "schema": map[string]any{"openAPIV3Schema": map[string]any{"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}}},
	})
	widget := func(ns, name string, size int64) map[string]any {
		return map[string]any{"apiVersion": "example.com/v1", "kind": "Widget",
			"metadata": map[string]any{"name": name, "namespace": ns, "uid": "uid-" + name, "creationTimestamp": "2023-11-14T22:13:20Z", "generation": int64(1)},
			"spec":     map[string]any{"size": size, "color": "blue"}}
	}
	putJSON("example.com/widgets/ns-a/w1", widget("ns-a", "w1", 1))
	putJSON("example.com/widgets/ns-a/w1", widget("ns-a", "w1", 2))
	putJSON("example.com/widgets/ns-b/w2", widget("ns-b", "w2", 5))
	put("deployments/ns-a/web", deployment("ns-a", "web", 3, "nginx:1.27"), "")
	put("configmaps/ns-a/settings", configMap("ns-a", "settings", map[string]string{"mode": "three"}), "")
	del("configmaps/ns-a/old")
	if err != nil {
		return nil, err
	}
	// A KMS v2 value: the prefix kube-apiserver writes, then bytes only the
	// KMS plugin could open.
	kms := "secrets/ns-b/kms"
	rev, err := s.Put(ctx, kms, []byte("k8s:enc:kms:v2:vault:\x0a\x20sealed-by-the-kms-plugin"), nil)
	if err != nil {
		return nil, err
	}
	f.Versions[kms] = []Version{{Path: kms, Rev: rev, Encryption: "kms:vault"}}
	unknown, err := EncodeUnknown("future.example.io/v1", "Gizmo", []byte("\x0a\x05gizmo"))
	if err != nil {
		return nil, err
	}
	if rev, err = s.Put(ctx, f.Unknown, unknown, nil); err != nil {
		return nil, err
	}
	f.Versions[f.Unknown] = []Version{{Path: f.Unknown, Rev: rev}}
	return f, nil
}

func ptr[T any](v T) *T { return &v }

// ResourceVersion is the resourceVersion a reader reports for a version.
func (v Version) ResourceVersion() string { return strconv.FormatInt(v.Rev, 10) }

// MustWant is Want for a test, failing it on an error.
func (v Version) MustWant(t testing.TB) runtime.Object {
	t.Helper()
	obj, err := v.Want()
	if err != nil {
		t.Fatal(err)
	}
	return obj
}

// Want is the object a reader must report for the version: a copy of what
// was written (typed, or unstructured for JSON) with its revision as
// resourceVersion.
func (v Version) Want() (runtime.Object, error) {
	if v.JSON != nil {
		u := &unstructured.Unstructured{Object: runtime.DeepCopyJSON(v.JSON)}
		u.SetResourceVersion(v.ResourceVersion())
		return u, nil
	}
	obj := v.Obj.DeepCopyObject()
	m, err := apimeta.Accessor(obj)
	if err != nil {
		return nil, err
	}
	m.SetResourceVersion(v.ResourceVersion())
	return obj, nil
}

// Build writes the fixture into a new in-process etcd, stops it and
// returns the fixture and the member's db file.
func Build(t testing.TB) (*Fixture, string) {
	t.Helper()
	m := testetcd.StartSingle(t)
	cli := m.Client(t)
	f, err := Write(testetcd.Ctx(t, time.Minute), cli, "/registry/", t.TempDir())
	if err != nil {
		t.Fatalf("write the Kubernetes fixture: %v", err)
	}
	cli.Close()
	m.Stop()
	return f, m.DBPath()
}
