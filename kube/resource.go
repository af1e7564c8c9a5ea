// Package kube reads what kube-apiserver stores in etcd: it maps keys to
// resources, namespaces and names, decrypts values encrypted at rest,
// decodes them (protobuf through k8s.io/api's scheme, JSON as it is) and
// answers the Kubernetes questions of an operator from a snapshot, a db, a
// data dir or a backup: what fills the quota, what an object looked like
// at a revision, how it changed, and a copy of it kubectl apply takes.
package kube

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// DefaultRoot is kube-apiserver's default --etcd-prefix, with its slash.
const DefaultRoot = "/registry/"

// Resource is one kind of object kube-apiserver stores, and where.
type Resource struct {
	Group, Resource, Kind, Singular string
	ShortNames                      []string
	// Prefix is where its objects live under the root: "deployments",
	// "services/specs", "example.com/widgets".
	Prefix string
	// Namespaced is known for custom resources (their CRD says); for
	// built-ins the keys' depth tells.
	Namespaced *bool
}

// String is the resource as kubectl names it: "deployments.apps", and
// "configmaps" for the core group.
func (r Resource) String() string {
	if r.Group == "" {
		return r.Resource
	}
	return r.Resource + "." + r.Group
}

// specialPrefixes are the built-in resources kube-apiserver stores under
// another name than their own (its storage factory's special prefixes);
// every other built-in lives under its resource name, without the group.
var specialPrefixes = map[schema.GroupResource]string{
	{Group: "", Resource: "replicationcontrollers"}:                        "controllers",
	{Group: "", Resource: "endpoints"}:                                     "services/endpoints",
	{Group: "", Resource: "nodes"}:                                         "minions",
	{Group: "", Resource: "services"}:                                      "services/specs",
	{Group: "extensions", Resource: "ingresses"}:                           "ingress",
	{Group: "networking.k8s.io", Resource: "ingresses"}:                    "ingress",
	{Group: "extensions", Resource: "podsecuritypolicies"}:                 "podsecuritypolicy",
	{Group: "policy", Resource: "podsecuritypolicies"}:                     "podsecuritypolicy",
	{Group: "apiextensions.k8s.io", Resource: "customresourcedefinitions"}: "apiextensions.k8s.io/customresourcedefinitions",
	{Group: "apiregistration.k8s.io", Resource: "apiservices"}:             "apiregistration.k8s.io/apiservices",
}

// shortNames are the built-in resources' short names, as their REST
// storage declares them and kubectl accepts them.
var shortNames = map[schema.GroupResource][]string{
	{Resource: "configmaps"}:                                               {"cm"},
	{Resource: "endpoints"}:                                                {"ep"},
	{Resource: "events"}:                                                   {"ev"},
	{Resource: "limitranges"}:                                              {"limits"},
	{Resource: "namespaces"}:                                               {"ns"},
	{Resource: "nodes"}:                                                    {"no"},
	{Resource: "persistentvolumeclaims"}:                                   {"pvc"},
	{Resource: "persistentvolumes"}:                                        {"pv"},
	{Resource: "pods"}:                                                     {"po"},
	{Resource: "replicationcontrollers"}:                                   {"rc"},
	{Resource: "resourcequotas"}:                                           {"quota"},
	{Resource: "serviceaccounts"}:                                          {"sa"},
	{Resource: "services"}:                                                 {"svc"},
	{Group: "apps", Resource: "daemonsets"}:                                {"ds"},
	{Group: "apps", Resource: "deployments"}:                               {"deploy"},
	{Group: "apps", Resource: "replicasets"}:                               {"rs"},
	{Group: "apps", Resource: "statefulsets"}:                              {"sts"},
	{Group: "autoscaling", Resource: "horizontalpodautoscalers"}:           {"hpa"},
	{Group: "batch", Resource: "cronjobs"}:                                 {"cj"},
	{Group: "certificates.k8s.io", Resource: "certificatesigningrequests"}: {"csr"},
	{Group: "networking.k8s.io", Resource: "ingresses"}:                    {"ing"},
	{Group: "networking.k8s.io", Resource: "networkpolicies"}:              {"netpol"},
	{Group: "networking.k8s.io", Resource: "ipaddresses"}:                  {"ip"},
	{Group: "policy", Resource: "poddisruptionbudgets"}:                    {"pdb"},
	{Group: "scheduling.k8s.io", Resource: "priorityclasses"}:              {"pc"},
	{Group: "storage.k8s.io", Resource: "storageclasses"}:                  {"sc"},
	{Group: "storage.k8s.io", Resource: "volumeattributesclasses"}:         {"vac"},
	{Group: "apiextensions.k8s.io", Resource: "customresourcedefinitions"}: {"crd", "crds"},
}

// builtins are the resources of the scheme's kinds that have a list kind
// (the ones kube-apiserver stores), plus CRDs and APIServices (JSON
// values, their types are not in k8s.io/api), sorted by name.
var builtins = sync.OnceValue(func() []Resource {
	seen := map[schema.GroupResource]Resource{}
	s := scheme()
	for gvk := range s.AllKnownTypes() {
		if strings.HasSuffix(gvk.Kind, "List") || !s.Recognizes(gvk.GroupVersion().WithKind(gvk.Kind+"List")) {
			continue
		}
		plural, singular := meta.UnsafeGuessKindToResource(gvk)
		if gvk.Kind == "Endpoints" { // the guess says "endpointses"
			plural.Resource, singular.Resource = "endpoints", "endpoints"
		}
		gr := plural.GroupResource()
		seen[gr] = Resource{Group: gr.Group, Resource: gr.Resource, Kind: gvk.Kind, Singular: singular.Resource}
	}
	seen[schema.GroupResource{Group: "apiextensions.k8s.io", Resource: "customresourcedefinitions"}] = Resource{
		Group: "apiextensions.k8s.io", Resource: "customresourcedefinitions", Kind: "CustomResourceDefinition", Singular: "customresourcedefinition"}
	seen[schema.GroupResource{Group: "apiregistration.k8s.io", Resource: "apiservices"}] = Resource{
		Group: "apiregistration.k8s.io", Resource: "apiservices", Kind: "APIService", Singular: "apiservice"}
	var list []Resource
	for gr, r := range seen {
		r.ShortNames = shortNames[gr]
		r.Prefix = specialPrefixes[gr]
		if r.Prefix == "" {
			r.Prefix = gr.Resource
		}
		list = append(list, r)
	}
	sort.Slice(list, func(i, j int) bool { return less(list[i], list[j]) })
	return list
})

// less orders resources as the lookups prefer them: the core group
// first, the deprecated extensions group last, then by name.
func less(a, b Resource) bool {
	rank := func(r Resource) int {
		switch r.Group {
		case "":
			return 0
		case "extensions":
			return 2
		}
		return 1
	}
	if rank(a) != rank(b) {
		return rank(a) < rank(b)
	}
	return a.String() < b.String()
}

// Catalog is the resources a db can hold: the built-ins and the custom
// resources its CRDs define.
type Catalog struct {
	list     []Resource
	byPrefix map[string]Resource
}

// NewCatalog is the built-ins plus custom.
func NewCatalog(custom ...Resource) *Catalog {
	c := &Catalog{list: append(append([]Resource(nil), builtins()...), custom...), byPrefix: map[string]Resource{}}
	sort.SliceStable(c.list, func(i, j int) bool { return less(c.list[i], c.list[j]) })
	for _, r := range c.list {
		if _, ok := c.byPrefix[r.Prefix]; !ok { // cohabiting: the preferred one
			c.byPrefix[r.Prefix] = r
		}
	}
	return c
}

// ErrResource reports a resource name no resource of the catalog answers to.
var ErrResource = errors.New("the server doesn't have a resource type")

// Lookup resolves a resource as kubectl takes it: plural, singular, short
// name or kind, optionally qualified by its group ("deployments.apps") or
// version and group ("deployments.v1.apps").
func (c *Catalog) Lookup(name string) (Resource, error) {
	n := strings.ToLower(name)
	var group string
	if i := strings.IndexByte(n, '.'); i >= 0 {
		n, group = n[:i], n[i+1:]
	}
	for _, r := range c.list {
		if group != "" && r.Group != group && !strings.HasSuffix(group, "."+r.Group) && !(r.Group == "" && isVersion(group)) {
			continue
		}
		if r.Resource == n || r.Singular == n || strings.ToLower(r.Kind) == n || contains(r.ShortNames, n) {
			return r, nil
		}
	}
	return Resource{}, fmt.Errorf("%w %q", ErrResource, name)
}

// isVersion says whether s looks like a version ("v1", "v1beta1").
func isVersion(s string) bool {
	return len(s) > 1 && s[0] == 'v' && s[1] >= '0' && s[1] <= '9'
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// ByPrefix is the resource stored under prefix, or one named after the
// prefix when the catalog does not know it.
func (c *Catalog) ByPrefix(prefix string) Resource {
	if r, ok := c.byPrefix[prefix]; ok {
		return r
	}
	r := Resource{Resource: prefix, Prefix: prefix}
	if g, res, ok := strings.Cut(prefix, "/"); ok && strings.Contains(g, ".") {
		r.Group, r.Resource = g, res
	}
	return r
}

// Ref is where a key puts an object: its resource's prefix under the
// root, its namespace ("" cluster-scoped) and name.
type Ref struct {
	Prefix, Namespace, Name string
}

// ParseKey splits a key under root into its Ref; ok is false for a key
// outside root. A key with more or fewer parts than an object's keeps
// them all in Name.
func ParseKey(root string, key []byte) (ref Ref, ok bool) {
	if len(key) <= len(root) || string(key[:len(root)]) != root {
		return Ref{}, false
	}
	rest := string(key[len(root):])
	n := 1
	if first, _, _ := strings.Cut(rest, "/"); strings.Contains(first, ".") || first == "services" {
		n = 2 // group/resource, services/specs, services/endpoints
	}
	parts := strings.SplitN(rest, "/", n+2)
	if len(parts) <= n {
		return Ref{Prefix: rest}, true
	}
	ref.Prefix = strings.Join(parts[:n], "/")
	switch obj := parts[n:]; len(obj) {
	case 1:
		ref.Name = obj[0]
	default:
		ref.Namespace, ref.Name = obj[0], obj[1]
	}
	return ref, true
}

// crd is what a CustomResourceDefinition says about the resource it
// defines (its JSON as kube-apiserver stores it).
type crd struct {
	Spec struct {
		Group string `json:"group"`
		Names struct {
			Plural, Singular, Kind string
			ShortNames             []string `json:"shortNames"`
		} `json:"names"`
		Scope string `json:"scope"`
	} `json:"spec"`
}

// CustomResource reads the resource a stored CRD defines.
func CustomResource(value []byte) (Resource, error) {
	var d crd
	if err := json.Unmarshal(value, &d); err != nil {
		return Resource{}, fmt.Errorf("CustomResourceDefinition: %w", err)
	}
	s := d.Spec
	if s.Group == "" || s.Names.Plural == "" {
		return Resource{}, errors.New("CustomResourceDefinition: no group or plural name")
	}
	namespaced := s.Scope != "Cluster"
	singular := s.Names.Singular
	if singular == "" {
		singular = strings.ToLower(s.Names.Kind)
	}
	return Resource{
		Group: s.Group, Resource: s.Names.Plural, Kind: s.Names.Kind, Singular: singular,
		ShortNames: s.Names.ShortNames, Prefix: s.Group + "/" + s.Names.Plural, Namespaced: &namespaced,
	}, nil
}
