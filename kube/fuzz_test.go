package kube_test

import (
	"testing"

	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/etcdkit/etcdkit/internal/k8stest"
	"github.com/etcdkit/etcdkit/kube"
)

// FuzzDecode: any key and value decode to an object or a Problem, never a
// panic; an object always prints, and a Problem-free one has a kind.
func FuzzDecode(f *testing.F) {
	cm, err := k8stest.Encode(k8stest.SeedConfigMap())
	if err != nil {
		f.Fatal(err)
	}
	unknown, err := k8stest.EncodeUnknown("x.io/v1", "X", []byte{1, 2, 3})
	if err != nil {
		f.Fatal(err)
	}
	for _, v := range [][]byte{cm, unknown, []byte(`{"apiVersion":"example.com/v1","kind":"W","metadata":{"name":"w"}}`), []byte("k8s:enc:aescbc:v1:k:0123456789abcdef0123456789abcdef"), []byte("k8s:enc:kms:v2:x:")} {
		f.Add([]byte("/registry/configmaps/ns/name"), v)
	}
	d := &kube.Decoder{Catalog: kube.NewCatalog()}
	f.Fuzz(func(t *testing.T, key, value []byte) {
		o, ok := d.Decode(&mvccpb.KeyValue{Key: key, Value: value, ModRevision: 7})
		if !ok {
			return
		}
		if o.Problem == nil {
			if o.Obj == nil || o.Kind == "" && o.Encoding == "protobuf" {
				t.Fatalf("no problem, no object: %+v", o)
			}
			if _, err := o.Map(); err != nil {
				t.Fatalf("decoded object does not print: %v", err)
			}
		}
	})
}
