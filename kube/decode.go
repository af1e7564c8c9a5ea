package kube

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"go.etcd.io/etcd/api/v3/mvccpb"
	yamlv2 "go.yaml.in/yaml/v2"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// protobufMagic starts kube-apiserver's protobuf values: the envelope of
// a runtime.Unknown that carries apiVersion, kind and the object's bytes.
var protobufMagic = []byte("k8s\x00")

// Errors of decoding; Object.Problem wraps one of them (or a decryption
// error).
var (
	// ErrUnknownType reports a protobuf value of a type the scheme does
	// not know (a newer Kubernetes, an aggregated API).
	ErrUnknownType = errors.New("type not known to this etcdkit")
	// ErrNotObject reports a value that is not a Kubernetes object.
	ErrNotObject = errors.New("not a Kubernetes object")
)

// Object is one stored value under the root, decoded.
type Object struct {
	Key      string
	Ref      Ref
	Resource Resource
	// ModRevision and CreateRevision are the etcd revisions; the object's
	// resourceVersion is its ModRevision, as kube-apiserver reports it.
	ModRevision, CreateRevision int64
	// Size is the stored value's size in bytes.
	Size int
	// Encoding is "protobuf" or "json".
	Encoding   string
	APIVersion string
	Kind       string
	// Encryption is set for a value that was encrypted at rest.
	Encryption *Encryption
	// Obj is the object: a typed one of the scheme for protobuf, an
	// unstructured one for JSON. It is nil when Problem is set.
	Obj     runtime.Object
	Problem error
}

// Decoder turns stored values into objects.
type Decoder struct {
	Catalog *Catalog
	// Root is the etcd prefix (DefaultRoot when empty).
	Root string
	// Decrypter reads values encrypted at rest; nil reports them as
	// encrypted.
	Decrypter *Decrypter
}

func (d *Decoder) root() string {
	if d.Root == "" {
		return DefaultRoot
	}
	return d.Root
}

// Decode decodes one stored KeyValue; ok is false for a key outside the
// root. A value that cannot be decoded comes back with Problem set, never
// as an error: one bad object does not stop a listing.
func (d *Decoder) Decode(kv *mvccpb.KeyValue) (o Object, ok bool) {
	ref, ok := ParseKey(d.root(), kv.Key)
	if !ok {
		return Object{}, false
	}
	o = Object{
		Key: string(kv.Key), Ref: ref, Resource: d.Catalog.ByPrefix(ref.Prefix),
		ModRevision: kv.ModRevision, CreateRevision: kv.CreateRevision, Size: len(kv.Value),
	}
	value := kv.Value
	if enc, _, encrypted := Encrypted(value); encrypted {
		o.Encryption = &enc
		plain, err := d.Decrypter.Decrypt(kv.Key, value)
		if err != nil {
			o.Problem = err
			return o, true
		}
		value = plain
	}
	o.Obj, o.Problem = o.decode(value)
	if o.Obj != nil {
		if m, err := meta.Accessor(o.Obj); err == nil {
			m.SetResourceVersion(strconv.FormatInt(kv.ModRevision, 10))
		}
	}
	return o, true
}

func (o *Object) decode(value []byte) (runtime.Object, error) {
	switch {
	case bytes.HasPrefix(value, protobufMagic):
		o.Encoding = "protobuf"
		obj, gvk, err := codecs().UniversalDeserializer().Decode(value, nil, nil)
		if gvk != nil {
			o.APIVersion, o.Kind = gvk.GroupVersion().String(), gvk.Kind
		}
		switch {
		case runtime.IsNotRegisteredError(err):
			if o.Kind == "" {
				o.APIVersion, o.Kind = envelopeType(value)
			}
			return nil, fmt.Errorf("%w: %s %s, %d bytes of protobuf", ErrUnknownType, o.APIVersion, o.Kind, o.Size)
		case err != nil:
			return nil, fmt.Errorf("%w: protobuf: %w", ErrNotObject, err)
		}
		obj.GetObjectKind().SetGroupVersionKind(*gvk)
		return obj, nil
	case len(value) > 0 && value[0] == '{':
		o.Encoding = "json"
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON(value); err != nil {
			return nil, fmt.Errorf("%w: JSON: %w", ErrNotObject, err)
		}
		o.APIVersion, o.Kind = u.GetAPIVersion(), u.GetKind()
		return u, nil
	}
	return nil, fmt.Errorf("%w: %d bytes that are neither protobuf nor JSON", ErrNotObject, len(value))
}

// envelopeType reads apiVersion and kind from the protobuf envelope alone.
func envelopeType(value []byte) (apiVersion, kind string) {
	var u runtime.Unknown
	if err := u.Unmarshal(value[len(protobufMagic):]); err != nil {
		return "", ""
	}
	return u.APIVersion, u.Kind
}

// GVK is the object's group, version and kind.
func (o Object) GVK() schema.GroupVersionKind {
	return schema.FromAPIVersionAndKind(o.APIVersion, o.Kind)
}

// JSON is the object as the API server returns it (the JSON kubectl's
// -o json and -o yaml print).
func (o Object) JSON() ([]byte, error) {
	if o.Obj == nil {
		return nil, o.Problem
	}
	return json.Marshal(o.Obj)
}

// Map is the object as a JSON map, for editing.
func (o Object) Map() (map[string]any, error) {
	b, err := o.JSON()
	if err != nil {
		return nil, err
	}
	var m map[string]any
	return m, json.Unmarshal(b, &m)
}

// YAML prints a value as kubectl -o yaml does (sigs.k8s.io/yaml: its
// JSON, keys sorted), byte for byte, without parsing the JSON a second
// time as YAML: numbers keep the type the YAML parser would give them.
func YAML(v any) ([]byte, error) {
	j, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.UseNumber()
	var doc any
	if err := dec.Decode(&doc); err != nil {
		return nil, err
	}
	return yamlv2.Marshal(yamlNumbers(doc))
}

// yamlNumbers turns the JSON numbers of doc into what the YAML parser
// reads them as: int64 when integral and in range, else float64.
func yamlNumbers(doc any) any {
	switch x := doc.(type) {
	case map[string]any:
		for k, v := range x {
			x[k] = yamlNumbers(v)
		}
	case []any:
		for i, v := range x {
			x[i] = yamlNumbers(v)
		}
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return i
		}
		if u, err := strconv.ParseUint(string(x), 10, 64); err == nil {
			return u
		}
		f, _ := x.Float64()
		return f
	}
	return doc
}
