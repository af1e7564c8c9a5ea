package kube

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"golang.org/x/sys/unix"

	"github.com/etcdkit/etcdkit/inspect"
	"github.com/etcdkit/etcdkit/internal/fsutil"
)

// serverFields are the metadata fields the API server sets and refuses or
// ignores from a client: removed from extracted objects.
var serverFields = []string{
	"uid", "resourceVersion", "generation", "creationTimestamp", "deletionTimestamp",
	"deletionGracePeriodSeconds", "managedFields", "selfLink",
}

// Clean removes from an object what kubectl apply must not send back into
// a cluster: the server-set metadata and status, the owner references
// (their UIDs do not exist in the new objects' cluster), a Service's
// allocated cluster IPs (unless headless) and a Pod's node.
func Clean(obj map[string]any) {
	if md, ok := obj["metadata"].(map[string]any); ok {
		for _, f := range serverFields {
			delete(md, f)
		}
		delete(md, "ownerReferences")
	}
	delete(obj, "status")
	spec, _ := obj["spec"].(map[string]any)
	if spec == nil {
		return
	}
	switch obj["kind"] {
	case "Service":
		if spec["clusterIP"] != "None" {
			delete(spec, "clusterIP")
			delete(spec, "clusterIPs")
		}
	case "Pod":
		delete(spec, "nodeName")
	}
}

// controlled says whether an object has a controller owner, which
// recreates it.
func controlled(obj map[string]any) bool {
	md, _ := obj["metadata"].(map[string]any)
	refs, _ := md["ownerReferences"].([]any)
	for _, r := range refs {
		if m, ok := r.(map[string]any); ok && m["controller"] == true {
			return true
		}
	}
	return false
}

// ExtractOptions select what Extract writes.
type ExtractOptions struct {
	// Dir is created by Extract; it must not exist.
	Dir string
	// Namespaces to extract (all when empty); cluster-scoped objects are
	// extracted only when Namespaces is empty or ClusterScoped is set.
	Namespaces    []string
	ClusterScoped bool
	// Resources to extract (all but events when empty).
	Resources []Resource
	Rev       int64
	// KeepServerFields writes objects as stored (no Clean);
	// IncludeSecrets writes Secrets (mode 0600); IncludeOwned writes the
	// objects a controller owns (by default left to their owner).
	KeepServerFields, IncludeSecrets, IncludeOwned bool
}

// ExtractReport says what Extract wrote and left out, and why.
type ExtractReport struct {
	Written  int            `json:"written"`
	Skipped  map[string]int `json:"skipped"` // reason → objects
	Failed   []string       `json:"failed"`  // "key: problem"
	Revision int64          `json:"revision"`
}

// ErrExtractDir reports an output directory that already exists.
var ErrExtractDir = errors.New("the output directory exists; extract writes a new one")

// ErrIncomplete reports objects Extract could not write (encrypted
// without a key, of an unknown type); the others are written.
var ErrIncomplete = errors.New("some objects could not be extracted")

// Extract writes each selected object at the revision as a YAML file
// kubectl apply takes: DIR/<namespace>/<resource>/<name>.yaml, with
// cluster-scoped objects under DIR/_cluster/. Files are written into a
// temporary sibling directory, synced, and renamed to Dir last: after any
// failure Dir does not exist. Objects that cannot be decoded are listed
// in the report and make the result ErrIncomplete; Dir is still written.
func (d *Decoder) Extract(ctx context.Context, o *inspect.Opened, opts ExtractOptions) (*ExtractReport, error) {
	if _, err := os.Lstat(opts.Dir); err == nil {
		return nil, fmt.Errorf("%s: %w", opts.Dir, ErrExtractDir)
	}
	if err := os.MkdirAll(filepath.Dir(opts.Dir), 0o755); err != nil {
		return nil, err
	}
	tmp, err := fsutil.TempSibling(opts.Dir, fsutil.PartMarker)
	if err != nil {
		return nil, err
	}
	if err := os.Mkdir(tmp, 0o755); err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			os.RemoveAll(tmp)
		}
	}()
	rep := &ExtractReport{Skipped: map[string]int{}}
	root := d.root()
	wanted := map[string]bool{}
	for _, r := range opts.Resources {
		wanted[r.Prefix] = true
	}
	namespaces := map[string]bool{}
	for _, ns := range opts.Namespaces {
		namespaces[ns] = true
	}
	filter := func(key []byte) bool {
		ref, ok := ParseKey(root, key)
		switch {
		case !ok || len(wanted) > 0 && !wanted[ref.Prefix]:
			return false
		case len(wanted) == 0 && ref.Prefix == "events":
			return false // ephemeral; name "events" to get them
		case ref.Namespace == "":
			// with -n, the named namespaces' own objects come along
			return len(namespaces) == 0 || opts.ClusterScoped || ref.Prefix == "namespaces" && namespaces[ref.Name]
		}
		return len(namespaces) == 0 || namespaces[ref.Namespace]
	}
	end := []byte(root)
	end[len(end)-1]++
	rangeOpts := inspect.RangeOptions{KeyRange: inspect.KeyRange{Key: []byte(root), RangeEnd: end}, Rev: opts.Rev, Filter: filter}
	dirs := map[string]bool{}
	rep.Revision, err = inspect.Range(ctx, o, rangeOpts, func(kv *mvccpb.KeyValue) error {
		obj, _ := d.Decode(kv)
		return d.extractOne(tmp, obj, opts, rep, dirs)
	})
	if err != nil {
		return nil, err
	}
	if err := syncTree(tmp); err != nil {
		return nil, err
	}
	if err := fsutil.RenameSynced(tmp, opts.Dir); err != nil {
		return nil, err
	}
	ok = true
	sort.Strings(rep.Failed)
	if len(rep.Failed) > 0 {
		return rep, fmt.Errorf("%w: %d (%s)", ErrIncomplete, len(rep.Failed), rep.Failed[0])
	}
	return rep, nil
}

func (d *Decoder) extractOne(dir string, obj Object, opts ExtractOptions, rep *ExtractReport, dirs map[string]bool) error {
	secret := obj.Ref.Prefix == "secrets"
	if secret && !opts.IncludeSecrets {
		rep.Skipped["secret (pass --include-secrets)"]++
		return nil
	}
	if obj.Problem != nil {
		rep.Failed = append(rep.Failed, obj.Key+": "+obj.Problem.Error())
		return nil
	}
	m, err := obj.Map()
	if err != nil {
		return err
	}
	if controlled(m) && !opts.IncludeOwned {
		rep.Skipped["owned by a controller, which recreates it (pass --include-owned)"]++
		return nil
	}
	if !opts.KeepServerFields {
		Clean(m)
	}
	y, err := YAML(m)
	if err != nil {
		return err
	}
	ns := obj.Ref.Namespace
	if ns == "" {
		ns = "_cluster"
	}
	sub := filepath.Join(dir, ns, obj.Resource.String())
	if !dirs[sub] {
		if err := os.MkdirAll(sub, 0o755); err != nil {
			return err
		}
		dirs[sub] = true
	}
	perm := os.FileMode(0o644)
	if secret {
		perm = 0o600
	}
	name := obj.Ref.Name
	if name == "" || strings.ContainsAny(name, "/\x00") || name == "." || name == ".." {
		rep.Failed = append(rep.Failed, fmt.Sprintf("%s: no usable object name", obj.Key))
		return nil
	}
	if err := os.WriteFile(filepath.Join(sub, name+".yaml"), y, perm); err != nil {
		return err
	}
	rep.Written++
	return nil
}

// syncTree makes a freshly written tree durable: syncfs flushes the data
// and metadata of the file system that holds it, in one call.
func syncTree(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.Syncfs(int(f.Fd())); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}
