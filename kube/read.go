package kube

import (
	"bytes"
	"context"
	"errors"
	"sort"

	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/etcdkit/etcdkit/inspect"
)

// Usage is the space one resource takes in one namespace ("" for a
// cluster-scoped resource), from the key bucket.
type Usage struct {
	Resource  string `json:"resource"`
	Namespace string `json:"namespace,omitempty"`
	// Objects and Bytes are the live objects and their latest entries.
	Objects int64 `json:"objects"`
	Bytes   int64 `json:"bytes"`
	// Revisions and RevisionBytes count every stored version, deletions
	// included; HistoryBytes is what compaction at the current revision
	// would free.
	Revisions     int64 `json:"revisions"`
	RevisionBytes int64 `json:"revision_bytes"`
	HistoryBytes  int64 `json:"history_bytes"`
	Deletions     int64 `json:"deletions"`
}

// Summary is the Kubernetes view of "what fills my quota".
type Summary struct {
	// Resources sums Rows by resource over every namespace.
	Resources []Usage `json:"resources"`
	// Rows are per resource and namespace, the Top largest.
	Rows []Usage `json:"rows"`
	// Other sums the rows Top left out; NonKubernetes the keys outside
	// the root; Total everything.
	Other           Usage `json:"other"`
	NonKubernetes   Usage `json:"non_kubernetes"`
	Total           Usage `json:"total"`
	Revision        int64 `json:"revision"`
	CompactRevision int64 `json:"compact_revision"`
}

// Summarize reports the space by resource and namespace in one checked
// pass of the db, from the keys alone (no value is decoded), and lists the
// top rows by stored bytes (0: all).
func (d *Decoder) Summarize(ctx context.Context, o *inspect.Opened, top int) (*Summary, error) {
	root := []byte(d.root())
	rep, err := inspect.DU(ctx, o, inspect.DUOptions{Group: func(key []byte) []byte {
		return key[:groupEnd(root, key)]
	}})
	if err != nil {
		return nil, err
	}
	s := &Summary{Revision: rep.Revision, CompactRevision: rep.CompactRevision, Other: Usage{Resource: "other"}, Total: Usage{Resource: "total"}, NonKubernetes: Usage{Resource: "non-kubernetes"}}
	for _, u := range rep.Prefixes {
		row := Usage{Objects: u.LiveKeys, Bytes: u.LiveBytes, Revisions: u.Revisions, RevisionBytes: u.Bytes, HistoryBytes: u.HistoryBytes(), Deletions: u.Tombstones}
		s.Total.add(row)
		group := []byte(u.Prefix)
		if !bytes.HasPrefix(group, root) {
			s.NonKubernetes.add(row)
			continue
		}
		if group[len(group)-1] == '/' {
			group = append(group, 'x') // a name, for ParseKey
		}
		ref, _ := ParseKey(string(root), group)
		row.Resource, row.Namespace = d.Catalog.ByPrefix(ref.Prefix).String(), ref.Namespace
		s.Rows = append(s.Rows, row)
	}
	byResource := map[string]int{}
	for _, r := range s.Rows {
		i, ok := byResource[r.Resource]
		if !ok {
			i = len(s.Resources)
			byResource[r.Resource] = i
			s.Resources = append(s.Resources, Usage{Resource: r.Resource})
		}
		s.Resources[i].add(r)
	}
	for _, rows := range [][]Usage{s.Resources, s.Rows} {
		sort.SliceStable(rows, func(i, j int) bool {
			if rows[i].RevisionBytes != rows[j].RevisionBytes {
				return rows[i].RevisionBytes > rows[j].RevisionBytes
			}
			return rows[i].Resource+"/"+rows[i].Namespace < rows[j].Resource+"/"+rows[j].Namespace
		})
	}
	if top > 0 && len(s.Rows) > top {
		for _, r := range s.Rows[top:] {
			s.Other.add(r)
		}
		s.Rows = s.Rows[:top]
	}
	return s, nil
}

func (u *Usage) add(o Usage) {
	u.Objects += o.Objects
	u.Bytes += o.Bytes
	u.Revisions += o.Revisions
	u.RevisionBytes += o.RevisionBytes
	u.HistoryBytes += o.HistoryBytes
	u.Deletions += o.Deletions
}

// groupEnd is where a key's summary group ends: after the namespace's '/'
// for a namespaced object's key, after the resource prefix's for a
// cluster-scoped one; 0 (one group) for a key outside root. The group is
// a prefix of the key, so grouping allocates nothing per key.
func groupEnd(root, key []byte) int {
	if !bytes.HasPrefix(key, root) {
		return 0
	}
	end := len(root)
	segs := 1
	if first, _, _ := bytes.Cut(key[end:], []byte("/")); bytes.IndexByte(first, '.') >= 0 || string(first) == "services" {
		segs = 2
	}
	slashes := make([]int, 0, 3)
	for i := end; i < len(key) && len(slashes) < segs+1; i++ {
		if key[i] == '/' {
			slashes = append(slashes, i+1)
		}
	}
	switch {
	case len(slashes) < segs:
		return len(key) // a key with no object part: a group of its own
	case len(slashes) == segs:
		return slashes[segs-1] // cluster-scoped: ends after the prefix
	}
	return slashes[segs] // namespaced: ends after the namespace
}

// ErrNotFound reports a named object the data does not hold.
var ErrNotFound = errors.New("not found")

// Query selects objects of one resource: in one Namespace (every one when
// empty; cluster-scoped objects regardless), one Name when set, at Rev (0:
// the latest).
type Query struct {
	Resource  Resource
	Namespace string
	Name      string
	Rev       int64
}

// keyRange is the range of the resource's keys.
func (d *Decoder) keyRange(r Resource) inspect.KeyRange {
	p := []byte(d.root() + r.Prefix + "/")
	end := append([]byte(nil), p...)
	end[len(end)-1]++ // '/'+1: every key with the prefix
	return inspect.KeyRange{Key: p, RangeEnd: end}
}

// match says whether a key's object is one the query selects.
func (q Query) match(root string, key []byte) bool {
	ref, ok := ParseKey(root, key)
	return ok && ref.Prefix == q.Resource.Prefix &&
		(q.Namespace == "" || ref.Namespace == "" || ref.Namespace == q.Namespace) &&
		(q.Name == "" || ref.Name == q.Name)
}

// Get streams the query's objects at its revision in key order (namespace,
// then name), decoded, one at a time. It returns the db's current revision.
func (d *Decoder) Get(ctx context.Context, o *inspect.Opened, q Query, fn func(Object) error) (int64, error) {
	root := d.root()
	opts := inspect.RangeOptions{KeyRange: d.keyRange(q.Resource), Rev: q.Rev, Filter: func(k []byte) bool { return q.match(root, k) }}
	return inspect.Range(ctx, o, opts, func(kv *mvccpb.KeyValue) error {
		obj, _ := d.Decode(kv)
		return fn(obj)
	})
}

// Version is one stored version of an object, or its deletion.
type Version struct {
	Object
	Deleted bool
}

// History streams every stored version of the query's objects (a Name
// and, for a namespaced resource, a Namespace) from the oldest the db
// holds, in revision order. It returns the db's current revision.
func (d *Decoder) History(ctx context.Context, o *inspect.Opened, q Query, fn func(Version) error) (int64, error) {
	root := d.root()
	opts := inspect.HistoryOptions{KeyRange: d.keyRange(q.Resource), Stored: true}
	return inspect.History(ctx, o, opts, func(_ int64, evs []*mvccpb.Event) error {
		for _, ev := range evs {
			if !q.match(root, ev.Kv.Key) {
				continue
			}
			var v Version
			if ev.Type == mvccpb.DELETE {
				ref, _ := ParseKey(root, ev.Kv.Key)
				v = Version{Object: Object{Key: string(ev.Kv.Key), Ref: ref, Resource: q.Resource, ModRevision: ev.Kv.ModRevision}, Deleted: true}
			} else {
				v.Object, _ = d.Decode(ev.Kv)
			}
			if err := fn(v); err != nil {
				return err
			}
		}
		return nil
	})
}

// crdResource is the resource of the stored CRDs.
var crdResource = Resource{Group: "apiextensions.k8s.io", Resource: "customresourcedefinitions", Prefix: "apiextensions.k8s.io/customresourcedefinitions"}

// LoadCatalog reads the custom resources the db's CRDs define at rev
// into a catalog with the built-ins. A CRD that cannot be read is skipped
// and reported in skipped.
func (d *Decoder) LoadCatalog(ctx context.Context, o *inspect.Opened, rev int64) (skipped []error, err error) {
	var custom []Resource
	dd := Decoder{Catalog: NewCatalog(), Root: d.Root, Decrypter: d.Decrypter}
	_, err = dd.Get(ctx, o, Query{Resource: crdResource, Rev: rev}, func(obj Object) error {
		if obj.Problem != nil {
			skipped = append(skipped, errors.New(obj.Key+": "+obj.Problem.Error()))
			return nil
		}
		b, err := obj.JSON()
		if err == nil {
			var r Resource
			if r, err = CustomResource(b); err == nil {
				custom = append(custom, r)
				return nil
			}
		}
		skipped = append(skipped, errors.New(obj.Key+": "+err.Error()))
		return nil
	})
	if err != nil {
		return skipped, err
	}
	d.Catalog = NewCatalog(custom...)
	return skipped, nil
}

// IsBuiltin says whether name resolves without the db's CRDs.
func IsBuiltin(name string) bool {
	_, err := NewCatalog().Lookup(name)
	return err == nil
}

// Verification is what Verify found under the root.
type Verification struct {
	// Objects decoded; Encrypted values not checked (no key for them, or
	// KMS); UnknownTypes of a type this build does not know; Undecodable
	// values that are not Kubernetes objects at all.
	Objects, Encrypted, UnknownTypes, Undecodable int
	// First names the first undecodable value.
	First string
}

// Verify decodes every live value under the root (one checked pass, then
// the values in key order) and counts what it found: the Kubernetes
// check of a restore drill.
func (d *Decoder) Verify(ctx context.Context, o *inspect.Opened) (*Verification, error) {
	root := []byte(d.root())
	end := append([]byte(nil), root...)
	end[len(end)-1]++
	v := &Verification{}
	_, err := inspect.Range(ctx, o, inspect.RangeOptions{KeyRange: inspect.KeyRange{Key: root, RangeEnd: end}}, func(kv *mvccpb.KeyValue) error {
		obj, _ := d.Decode(kv)
		switch {
		case obj.Problem == nil:
			v.Objects++
		case errors.Is(obj.Problem, ErrEncrypted) || errors.Is(obj.Problem, ErrKMS):
			v.Encrypted++
		case errors.Is(obj.Problem, ErrUnknownType):
			v.UnknownTypes++
		default:
			if v.Undecodable++; v.First == "" {
				v.First = obj.Key + ": " + obj.Problem.Error()
			}
		}
		return nil
	})
	return v, err
}
