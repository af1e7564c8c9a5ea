package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apiserver/pkg/storage/value"

	"github.com/etcdkit/etcdkit/internal/k8stest"
)

// k8sMix is the Kubernetes-shaped data set: objects per namespace, by
// the key prefix kube-apiserver stores them under.
var k8sMix = []struct {
	prefix string
	per    int
	make   func(ns string, i int) runtime.Object
}{
	{"pods", 600, benchPod},
	{"events", 600, benchEvent},
	{"configmaps", 200, benchConfigMap},
	{"replicasets", 200, benchReplicaSet},
	{"secrets", 120, benchSecret},
	{"deployments", 100, benchDeployment},
	{"services/specs", 100, benchService},
	{"services/endpoints", 100, benchEndpoints},
	{"leases", 20, benchLease},
}

const (
	k8sNamespaces = 250
	k8sWidgets    = 100 // custom resources per namespace (JSON)
)

// ensureK8sSnapshot returns the cached Kubernetes-shaped snapshot: more
// than 500k objects of many resource types in 250 namespaces, encoded as
// kube-apiserver stores them (protobuf envelope, JSON custom resources, a
// third of the secrets AES-CBC encrypted by kube-apiserver's transformer,
// a second version of every deployment), written through a real etcd 3.7.
func ensureK8sSnapshot() string {
	const stamp = "k8s v1\n"
	snap := filepath.Join(*cacheDir, "k8s.db")
	if b, err := os.ReadFile(snap + ".spec"); err == nil && string(b) == stamp {
		if _, err := os.Stat(snap); err == nil {
			return snap
		}
	}
	log.Printf("generating the Kubernetes benchmark snapshot: this takes a few minutes once")
	dataDir := filepath.Join(*cacheDir, "gen-k8s.etcd")
	os.RemoveAll(dataDir)
	defer os.RemoveAll(dataDir)
	stop, cli, url := startEtcd(dataDir)
	defer stop()
	ctx := context.Background()
	tr, err := k8stest.Transformer(ctx, *cacheDir, k8stest.EncryptionConfig("aescbc", "identity"))
	if err != nil {
		log.Fatal(err)
	}
	store := k8stest.Store{Client: cli, Root: "/registry/"}
	type item struct {
		key   string
		value []byte
	}
	items := make(chan item, 1024)
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var ops []clientv3.Op
			size := 0
			flush := func() {
				if len(ops) == 0 {
					return
				}
				if _, err := cli.Txn(ctx).Then(ops...).Commit(); err != nil {
					log.Fatal(err)
				}
				ops, size = ops[:0], 0
			}
			for it := range items {
				ops = append(ops, clientv3.OpPut(it.key, string(it.value)))
				// 128 ops: etcd's --max-txn-ops default.
				if size += len(it.value); size > 512<<10 || len(ops) >= 128 {
					flush()
				}
			}
			flush()
		}()
	}
	start := time.Now()
	emit := func(path string, obj runtime.Object, t value.Transformer) {
		b, err := k8stest.Encode(obj)
		if err != nil {
			log.Fatal(err)
		}
		key := store.Root + path
		if t != nil {
			if b, err = t.TransformToStorage(ctx, b, value.DefaultContext(key)); err != nil {
				log.Fatal(err)
			}
		}
		items <- item{key, b}
	}
	n := 0
	for round := 0; round < 2; round++ {
		for nsi := 0; nsi < k8sNamespaces; nsi++ {
			ns := fmt.Sprintf("team-%03d", nsi)
			if round == 1 {
				// The second version of every deployment: history.
				for i := 0; i < 100; i++ {
					d := benchDeployment(ns, i).(*appsv1.Deployment)
					d.Spec.Template.Spec.Containers[0].Image += "-2"
					emit(fmt.Sprintf("deployments/%s/%s", ns, d.Name), d, nil)
					n++
				}
				continue
			}
			emit("namespaces/"+ns, &corev1.Namespace{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"}, ObjectMeta: benchMeta("", ns, 0)}, nil)
			n++
			for _, m := range k8sMix {
				for i := 0; i < m.per; i++ {
					obj := m.make(ns, i)
					var t value.Transformer
					if m.prefix == "secrets" && i%3 == 0 {
						t = tr
					}
					name := obj.(metav1.Object).GetName()
					emit(fmt.Sprintf("%s/%s/%s", m.prefix, ns, name), obj, t)
					n++
				}
			}
			for i := 0; i < k8sWidgets; i++ {
				w := fmt.Sprintf(`{"apiVersion":"example.com/v1","kind":"Widget","metadata":{"name":"widget-%d","namespace":"%s","uid":"%s","creationTimestamp":"2024-01-01T00:00:00Z"},"spec":{"size":%d,"color":"blue","notes":"%s"}}`,
					i, ns, uid(ns, "widget", i), i, strings.Repeat("n", 600+i%400))
				items <- item{fmt.Sprintf("%sexample.com/widgets/%s/widget-%d", store.Root, ns, i), []byte(w)}
				n++
			}
			if nsi%25 == 24 {
				log.Printf("%d namespaces, %d objects (%s)", nsi+1, n, time.Since(start).Round(time.Second))
			}
		}
	}
	close(items)
	wg.Wait()
	log.Printf("%d objects written in %s", n, time.Since(start).Round(time.Second))
	saveSnapshot(url, snap, stamp)
	return snap
}

func uid(ns, kind string, i int) types.UID {
	return types.UID(fmt.Sprintf("%08x-%04x-4%03x-8%03x-%012x", len(ns)*7919+i, i%65536, len(kind), i%4096, i*104729))
}

func benchMeta(ns, name string, i int) metav1.ObjectMeta {
	return metav1.ObjectMeta{
		Namespace: ns, Name: name, UID: uid(ns, name, i), CreationTimestamp: metav1.NewTime(time.Unix(1_704_067_200+int64(i), 0)),
		Labels: map[string]string{"app.kubernetes.io/name": "svc-" + fmt.Sprint(i%40), "app.kubernetes.io/part-of": ns, "tier": []string{"web", "api", "db", "cache"}[i%4]},
	}
}

func benchPod(ns string, i int) runtime.Object {
	name := fmt.Sprintf("svc-%d-7d9c5b-%05d", i%40, i)
	md := benchMeta(ns, name, i)
	md.Annotations = map[string]string{"kubectl.kubernetes.io/restartedAt": "2024-01-02T03:04:05Z", "checksum/config": strings.Repeat("a", 64)}
	md.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: fmt.Sprintf("svc-%d-7d9c5b", i%40), UID: uid(ns, "rs", i%40), Controller: ptrTo(true)}}
	var env []corev1.EnvVar
	for e := 0; e < 12; e++ {
		env = append(env, corev1.EnvVar{Name: fmt.Sprintf("SETTING_%d", e), Value: fmt.Sprintf("value-%d-%d-%s", e, i, strings.Repeat("x", 100))})
	}
	return &corev1.Pod{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"}, ObjectMeta: md,
		Spec: corev1.PodSpec{NodeName: fmt.Sprintf("node-%d", i%50), ServiceAccountName: "default", Containers: []corev1.Container{{
			Name: "app", Image: fmt.Sprintf("registry.example.com/%s/app:1.%d", ns, i%20), Env: env,
			Ports:     []corev1.ContainerPort{{ContainerPort: 8080, Protocol: corev1.ProtocolTCP}},
			Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("128Mi")}},
		}, {Name: "sidecar", Image: "registry.example.com/proxy:2.1", Args: []string{"--port=15001", "--admin=15000"}}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: fmt.Sprintf("10.%d.%d.%d", i%200, (i/200)%250, i%250), HostIP: "192.168.0.10",
			Conditions:        []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}, {Type: corev1.PodScheduled, Status: corev1.ConditionTrue}, {Type: corev1.ContainersReady, Status: corev1.ConditionTrue}},
			ContainerStatuses: []corev1.ContainerStatus{{Name: "app", Ready: true, Image: "app", ImageID: "sha256:" + strings.Repeat("b", 64)}, {Name: "sidecar", Ready: true, Image: "proxy", ImageID: "sha256:" + strings.Repeat("c", 64)}}},
	}
}

func benchEvent(ns string, i int) runtime.Object {
	return &corev1.Event{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Event"}, ObjectMeta: benchMeta(ns, fmt.Sprintf("svc-%d.%x", i%40, i*7919), i),
		InvolvedObject: corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: fmt.Sprintf("svc-%d-7d9c5b-%05d", i%40, i)},
		Reason:         "Pulled", Message: fmt.Sprintf("Successfully pulled image %q in 1.2s (%s)", "registry.example.com/app", strings.Repeat("m", 300)),
		Source: corev1.EventSource{Component: "kubelet", Host: "node-1"}, Count: int32(i%10 + 1), Type: corev1.EventTypeNormal}
}

func benchConfigMap(ns string, i int) runtime.Object {
	data := map[string]string{}
	for k := 0; k < 8; k++ {
		data[fmt.Sprintf("setting-%d.properties", k)] = strings.Repeat(fmt.Sprintf("key%d=value-%d\n", k, i), 30)
	}
	return &corev1.ConfigMap{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"}, ObjectMeta: benchMeta(ns, fmt.Sprintf("config-%d", i), i), Data: data}
}

func benchSecret(ns string, i int) runtime.Object {
	return &corev1.Secret{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"}, ObjectMeta: benchMeta(ns, fmt.Sprintf("secret-%d", i), i), Type: corev1.SecretTypeOpaque,
		Data: map[string][]byte{"tls.crt": []byte(strings.Repeat("C", 1200)), "tls.key": []byte(strings.Repeat("K", 600))}}
}

func benchReplicaSet(ns string, i int) runtime.Object {
	d := benchDeployment(ns, i%100).(*appsv1.Deployment)
	md := benchMeta(ns, fmt.Sprintf("svc-%d-%05x", i%100, i), i)
	md.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "Deployment", Name: d.Name, UID: d.UID, Controller: ptrTo(true)}}
	return &appsv1.ReplicaSet{TypeMeta: metav1.TypeMeta{APIVersion: "apps/v1", Kind: "ReplicaSet"}, ObjectMeta: md,
		Spec: appsv1.ReplicaSetSpec{Replicas: ptrTo(int32(i % 5)), Selector: d.Spec.Selector, Template: d.Spec.Template}}
}

func benchDeployment(ns string, i int) runtime.Object {
	labels := map[string]string{"app": fmt.Sprintf("svc-%d", i)}
	return &appsv1.Deployment{TypeMeta: metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"}, ObjectMeta: benchMeta(ns, fmt.Sprintf("svc-%d", i), i),
		Spec: appsv1.DeploymentSpec{Replicas: ptrTo(int32(3)), Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: corev1.PodSpec{Containers: []corev1.Container{{
				Name: "app", Image: fmt.Sprintf("registry.example.com/%s/app:1.%d", ns, i%20), Args: []string{"--config=/etc/app/" + strings.Repeat("c", 200)},
				Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("512Mi")}},
			}}}}},
		Status: appsv1.DeploymentStatus{Replicas: 3, ReadyReplicas: 3, AvailableReplicas: 3, ObservedGeneration: 2}}
}

func benchService(ns string, i int) runtime.Object {
	return &corev1.Service{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Service"}, ObjectMeta: benchMeta(ns, fmt.Sprintf("svc-%d", i), i),
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": fmt.Sprintf("svc-%d", i)}, ClusterIP: fmt.Sprintf("10.96.%d.%d", i%250, i%200), Type: corev1.ServiceTypeClusterIP,
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP}}}}
}

func benchEndpoints(ns string, i int) runtime.Object {
	var addrs []corev1.EndpointAddress
	for a := 0; a < 3; a++ {
		addrs = append(addrs, corev1.EndpointAddress{IP: fmt.Sprintf("10.%d.%d.%d", a, i%250, i%200), NodeName: ptrTo("node-1"),
			TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: fmt.Sprintf("svc-%d-7d9c5b-%05d", i, a)}})
	}
	return &corev1.Endpoints{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Endpoints"}, ObjectMeta: benchMeta(ns, fmt.Sprintf("svc-%d", i), i),
		Subsets: []corev1.EndpointSubset{{Addresses: addrs, Ports: []corev1.EndpointPort{{Name: "http", Port: 8080, Protocol: corev1.ProtocolTCP}}}}}
}

func benchLease(ns string, i int) runtime.Object {
	return &coordinationv1.Lease{TypeMeta: metav1.TypeMeta{APIVersion: "coordination.k8s.io/v1", Kind: "Lease"}, ObjectMeta: benchMeta(ns, fmt.Sprintf("lock-%d", i), i),
		Spec: coordinationv1.LeaseSpec{HolderIdentity: ptrTo(fmt.Sprintf("holder-%d", i)), LeaseDurationSeconds: ptrTo(int32(15))}}
}

func ptrTo[T any](v T) *T { return &v }
