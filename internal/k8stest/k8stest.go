// Package k8stest writes Kubernetes objects into a real etcd the way
// kube-apiserver stores them, with Kubernetes' own libraries: the
// protobuf serializer and its "k8s\x00" envelope from k8s.io/apimachinery,
// JSON for custom resources, and values encrypted at rest by
// k8s.io/apiserver's transformers loaded from an EncryptionConfiguration
// as kube-apiserver loads it. Tests and the bench use it; it is not
// product code and knows nothing of package kube.
package k8stest

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	clientv3 "go.etcd.io/etcd/client/v3"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/runtime/serializer/protobuf"
	"k8s.io/apiserver/pkg/server/options/encryptionconfig"
	"k8s.io/apiserver/pkg/storage/value"
)

// Scheme holds the types the tests write.
var Scheme = func() *runtime.Scheme {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, appsv1.AddToScheme, batchv1.AddToScheme, coordinationv1.AddToScheme, networkingv1.AddToScheme, rbacv1.AddToScheme} {
		if err := add(s); err != nil {
			panic(err)
		}
	}
	return s
}()

var codecs = serializer.NewCodecFactory(Scheme)

// Encode serializes obj as kube-apiserver's storage codec does: protobuf
// in the runtime.Unknown envelope, at obj's own group version.
func Encode(obj runtime.Object) ([]byte, error) {
	gvks, _, err := Scheme.ObjectKinds(obj)
	if err != nil {
		return nil, err
	}
	enc := codecs.EncoderForVersion(protobuf.NewSerializer(Scheme, Scheme), gvks[0].GroupVersion())
	return runtime.Encode(enc, obj)
}

// SeedConfigMap is a small ConfigMap, for fuzz seeds.
func SeedConfigMap() *corev1.ConfigMap {
	return configMap("ns", "name", map[string]string{"k": "v"})
}

// EncodeUnknown is the protobuf envelope of a type no scheme knows.
func EncodeUnknown(apiVersion, kind string, raw []byte) ([]byte, error) {
	u := runtime.Unknown{TypeMeta: runtime.TypeMeta{APIVersion: apiVersion, Kind: kind}, Raw: raw}
	b, err := u.Marshal()
	if err != nil {
		return nil, err
	}
	return append([]byte("k8s\x00"), b...), nil
}

// Store writes objects under Root ("/registry/").
type Store struct {
	Client *clientv3.Client
	Root   string
}

// Put stores value at Root+path, transformed by tr when set (with the
// full key as authenticated data, as kube-apiserver's store passes it),
// and returns the revision.
func (s Store) Put(ctx context.Context, path string, data []byte, tr value.Transformer) (int64, error) {
	key := s.Root + path
	if tr != nil {
		var err error
		if data, err = tr.TransformToStorage(ctx, data, value.DefaultContext(key)); err != nil {
			return 0, fmt.Errorf("encrypt %s: %w", key, err)
		}
	}
	resp, err := s.Client.Put(ctx, key, string(data))
	if err != nil {
		return 0, err
	}
	return resp.Header.Revision, nil
}

// PutObject encodes obj (protobuf) and stores it.
func (s Store) PutObject(ctx context.Context, path string, obj runtime.Object, tr value.Transformer) (int64, error) {
	b, err := Encode(obj)
	if err != nil {
		return 0, err
	}
	return s.Put(ctx, path, b, tr)
}

// PutJSON stores obj as JSON, as custom resources and CRDs are stored.
func (s Store) PutJSON(ctx context.Context, path string, obj any) (int64, error) {
	b, err := json.Marshal(obj)
	if err != nil {
		return 0, err
	}
	return s.Put(ctx, path, b, nil)
}

// Delete removes Root+path and returns the revision.
func (s Store) Delete(ctx context.Context, path string) (int64, error) {
	resp, err := s.Client.Delete(ctx, s.Root+path)
	if err != nil {
		return 0, err
	}
	return resp.Header.Revision, nil
}

// Transformer loads an EncryptionConfiguration with kube-apiserver's own
// code and returns the transformer it uses for secrets.
func Transformer(ctx context.Context, dir, config string) (value.Transformer, error) {
	path := filepath.Join(dir, fmt.Sprintf("encryption-%d.yaml", len(config)))
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		return nil, err
	}
	c, err := encryptionconfig.LoadEncryptionConfig(ctx, path, false, "etcdkit-test")
	if err != nil {
		return nil, err
	}
	tr, ok := c.Transformers[schema.GroupResource{Resource: "secrets"}]
	if !ok {
		return nil, fmt.Errorf("%s: no transformer for secrets", path)
	}
	return tr, nil
}

// EncryptionConfig is an EncryptionConfiguration for secrets whose
// providers are listed in order (the first encrypts, all decrypt), each
// "aescbc", "aesgcm", "secretbox" or "identity", with the keys of Keys
// ("aescbc/rotated": aescbc with its keys in reverse order, so the other
// key encrypts).
func EncryptionConfig(providers ...string) string {
	s := "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n"
	for _, p := range providers {
		if p == "identity" {
			s += "  - identity: {}\n"
			continue
		}
		keys := Keys[p]
		if p == "aescbc/rotated" {
			p, keys = "aescbc", [][2]string{Keys["aescbc"][1], Keys["aescbc"][0]}
		}
		s += fmt.Sprintf("  - %s:\n      keys:\n", p)
		for _, k := range keys {
			s += fmt.Sprintf("      - name: %s\n        secret: %s\n", k[0], k[1])
		}
	}
	return s
}

// Keys are the test keys per provider: name, base64 secret.
var Keys = map[string][][2]string{
	"aescbc":    {{"cbc-key", "MTIzNDU2Nzg5MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTI="}, {"cbc-old", "MDEyMzQ1Njc4OWFiY2RlZg=="}},
	"aesgcm":    {{"gcm-key", "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3ODk="}},
	"secretbox": {{"box-key", "c2VjcmV0Ym94LWtleS0zMi1ieXRlcy1sb25nLS0tLS0="}},
}

// File is one file of a tree ReadTree read.
type File struct {
	Data []byte
	Mode os.FileMode
}

// ReadTree reads every file under dir, by its path relative to dir (what
// inspect k8s extract wrote).
func ReadTree(dir string) (map[string]File, error) {
	files := map[string]File{}
	err := filepath.WalkDir(dir, func(p string, e os.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		fi, err := e.Info()
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		files[rel] = File{Data: b, Mode: fi.Mode()}
		return err
	})
	return files, err
}
