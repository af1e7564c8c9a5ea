package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"runtime"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/pmezard/go-difflib/difflib"
	"github.com/urfave/cli/v2"
	"k8s.io/apimachinery/pkg/api/meta"

	"github.com/etcdkit/etcdkit/inspect"
	"github.com/etcdkit/etcdkit/kube"
)

// k8sFlags are every inspect k8s command's: the source, kube-apiserver's
// etcd prefix and its encryption config.
func k8sFlags(extra ...cli.Flag) []cli.Flag {
	return append(append(sourceFlags(),
		&cli.StringFlag{Name: "etcd-prefix", Value: "/registry", Usage: "kube-apiserver's --etcd-prefix"},
		&cli.StringFlag{Name: "encryption-config", Usage: "kube-apiserver's --encryption-provider-config file, to decrypt values encrypted at rest (aescbc, aesgcm, secretbox)"},
	), extra...)
}

// k8sDecoder reads the k8s flags.
func k8sDecoder(c *cli.Context) (*kube.Decoder, error) {
	d := &kube.Decoder{Catalog: kube.NewCatalog(), Root: strings.TrimSuffix(c.String("etcd-prefix"), "/") + "/"}
	if p := c.String("encryption-config"); p != "" {
		dec, err := kube.LoadEncryptionConfig(p)
		if err != nil {
			return nil, err
		}
		d.Decrypter = dec
	}
	return d, nil
}

// withCatalog loads the db's CRDs into d's catalog unless every name is a
// built-in resource.
func withCatalog(c *cli.Context, d *kube.Decoder, src *inspect.Opened, rev int64, names ...string) error {
	for _, n := range names {
		if !kube.IsBuiltin(n) {
			skipped, err := d.LoadCatalog(c.Context, src, rev)
			for _, s := range skipped {
				fmt.Fprintf(c.App.ErrWriter, "warning: %v\n", s)
			}
			return revisionError(src, err)
		}
	}
	return nil
}

func inspectK8sCommand() *cli.Command {
	return &cli.Command{
		Name:  "k8s",
		Usage: "Kubernetes objects in the data: decoded, decrypted, summarized, and extracted for kubectl apply",
		Description: "Reads what kube-apiserver stores under its etcd prefix (--etcd-prefix, default /registry):\n" +
			"protobuf values through k8s.io/api's types, JSON values (custom resources, CRDs, APIServices)\n" +
			"as they are. Values encrypted at rest are decrypted with --encryption-config (aescbc, aesgcm,\n" +
			"secretbox); KMS-encrypted values cannot be read offline and are reported as such.",
		Subcommands: []*cli.Command{k8sSummaryCommand(), k8sGetCommand(), k8sHistoryCommand(), k8sExtractCommand()},
	}
}

func k8sSummaryCommand() *cli.Command {
	return leaf(&cli.Command{
		Name:  "summary",
		Usage: "what fills the quota, by resource and namespace: objects, bytes, stored revisions and history",
		Description: "Sizes are the key bucket's entries (revision key and stored KeyValue). HISTORY is what\n" +
			"compaction at the current revision frees. Only keys are read: encrypted values count as stored.",
		Flags: k8sFlags(
			&cli.IntFlag{Name: "top", Value: 30, Usage: "with --namespaces: list this many rows, largest first (0: all)"},
			&cli.BoolFlag{Name: "namespaces", Usage: "a row per resource and namespace (default: per resource)"},
		),
		Action: func(c *cli.Context) error {
			format, err := formatIn(c, "simple", "json", "table")
			if err != nil {
				return err
			}
			d, err := k8sDecoder(c)
			if err != nil {
				return err
			}
			return withSource(c, func(src *inspect.Opened) error {
				s, err := d.Summarize(c.Context, src, c.Int("top"))
				if err != nil {
					return err
				}
				return printSummary(c.App.Writer, format, s, c.Bool("namespaces"))
			})
		},
	})
}

func printSummary(w io.Writer, format string, s *kube.Summary, namespaces bool) error {
	if format == "json" {
		return printJSON(w, record{json: s})
	}
	r := record{header: []string{"RESOURCE", "NAMESPACE", "OBJECTS", "SIZE", "REVISIONS", "STORED", "HISTORY", "DELETIONS"}}
	row := func(u kube.Usage) []string {
		return []string{u.Resource, u.Namespace, fmt.Sprint(u.Objects), humanBytes(u.Bytes), fmt.Sprint(u.Revisions),
			humanBytes(u.RevisionBytes), humanBytes(u.HistoryBytes), fmt.Sprint(u.Deletions)}
	}
	rows, extra := s.Resources, []kube.Usage{s.NonKubernetes}
	if namespaces {
		rows, extra = s.Rows, []kube.Usage{s.Other, s.NonKubernetes}
	} else {
		r.header = append(r.header[:1], r.header[2:]...)
	}
	for _, u := range rows {
		r.rows = append(r.rows, row(u))
	}
	for _, u := range extra {
		if u.Revisions > 0 {
			r.rows = append(r.rows, row(u))
		}
	}
	r.rows = append(r.rows, row(s.Total))
	if !namespaces {
		for i := range r.rows {
			r.rows[i] = append(r.rows[i][:1], r.rows[i][2:]...)
		}
	}
	if format == "table" {
		return printTable(w, r)
	}
	r.rows = append([][]string{r.header}, r.rows...)
	return printSimple(w, r)
}

// namespaceFlags are kubectl's -n and -A.
func namespaceFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "namespace", Aliases: []string{"n"}, Value: "default", Usage: "the namespace"},
		&cli.BoolFlag{Name: "all-namespaces", Aliases: []string{"A"}, Usage: "every namespace"},
	}
}

func k8sGetCommand() *cli.Command {
	return leaf(&cli.Command{
		Name:      "get",
		Usage:     "objects of a resource as kubectl get prints them, at the latest or any uncompacted revision",
		ArgsUsage: "RESOURCE [NAME]",
		Description: "RESOURCE is what kubectl takes: plural, singular, short name or kind, with an optional\n" +
			"group (deployments.apps) or version and group; custom resources by their CRD's names.\n" +
			"-o yaml and -o json print what the API server would return (resourceVersion is the object's\n" +
			"etcd mod revision); several objects print as a List. The default table shows NAME, REVISION,\n" +
			"SIZE and CREATED (-o wide adds the stored apiVersion and kind, encoding, encryption and key).",
		Flags: k8sFlags(append(namespaceFlags(),
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "yaml, json, name or wide (default: a table)"},
			&cli.Int64Flag{Name: "rev", Usage: "the revision to read at (default: the latest)"},
		)...),
		Action: func(c *cli.Context) error {
			args := c.Args().Slice()
			if len(args) < 1 || len(args) > 2 {
				return usageError{fmt.Errorf("inspect k8s get needs RESOURCE [NAME]")}
			}
			out := c.String("output")
			if !map[string]bool{"": true, "yaml": true, "json": true, "name": true, "wide": true}[out] {
				return usageError{fmt.Errorf("-o %s: use yaml, json, name or wide", out)}
			}
			d, err := k8sDecoder(c)
			if err != nil {
				return err
			}
			q := kube.Query{Namespace: c.String("namespace"), Rev: c.Int64("rev")}
			if c.Bool("all-namespaces") {
				q.Namespace = ""
			}
			if len(args) == 2 {
				q.Name = args[1]
			}
			return withSource(c, func(src *inspect.Opened) error {
				if err := withCatalog(c, d, src, q.Rev, args[0]); err != nil {
					return err
				}
				if q.Resource, err = d.Catalog.Lookup(args[0]); err != nil {
					return usageError{err}
				}
				p := newObjectPrinter(c.App.Writer, c.App.ErrWriter, out, q)
				_, err := d.Get(c.Context, src, q, p.print)
				if err := revisionError(src, err); err != nil {
					return err
				}
				return p.done()
			})
		},
	})
}

// objectPrinter prints objects as they stream, in kubectl get's shapes.
// YAML and JSON are rendered on every core and written in order.
type objectPrinter struct {
	w, errw io.Writer
	out     string
	q       kube.Query
	n       int
	table   record
	// first holds the first object: one object prints alone, more as a
	// List, which pool (set once the List started) renders.
	first     *kube.Object
	pool      *orderedPool
	jsonItems int
}

func newObjectPrinter(w, errw io.Writer, out string, q kube.Query) *objectPrinter {
	p := &objectPrinter{w: w, errw: errw, out: out, q: q}
	p.table.header = []string{"NAME", "REVISION", "SIZE", "CREATED"}
	if q.Namespace == "" {
		p.table.header = append([]string{"NAMESPACE"}, p.table.header...)
	}
	if out == "wide" {
		p.table.header = append(p.table.header, "APIVERSION", "KIND", "ENCODING", "ENCRYPTION", "KEY")
	}
	return p
}

func (p *objectPrinter) print(o kube.Object) error {
	p.n++
	if o.Problem != nil {
		fmt.Fprintf(p.errw, "warning: %s: %v\n", o.Key, o.Problem)
	}
	switch p.out {
	case "yaml", "json":
		if p.n == 1 {
			p.first = &o
			return nil
		}
		if p.pool == nil {
			p.pool = newOrderedPool(p.w)
			header := "apiVersion: v1\nitems:\n"
			if p.out == "json" {
				header = "{\n    \"apiVersion\": \"v1\",\n    \"items\": [\n"
			}
			p.pool.submit(func() ([]byte, error) { return []byte(header), nil })
			p.item(*p.first)
			p.first = nil
		}
		p.item(o)
		return nil
	case "name":
		_, err := fmt.Fprintf(p.w, "%s/%s\n", typeName(o), o.Ref.Name)
		return err
	}
	row := []string{o.Ref.Name, fmt.Sprint(o.ModRevision), humanBytes(int64(o.Size)), created(o)}
	if p.q.Namespace == "" {
		row = append([]string{o.Ref.Namespace}, row...)
	}
	if p.out == "wide" {
		enc := ""
		if o.Encryption != nil {
			enc = o.Encryption.Provider + ":" + o.Encryption.Key
		}
		row = append(row, o.APIVersion, o.Kind, o.Encoding, enc, o.Key)
	}
	p.table.rows = append(p.table.rows, row)
	return nil
}

// typeName is kubectl's -o name type: the lower-case kind and the group.
func typeName(o kube.Object) string {
	kind, group := strings.ToLower(o.Kind), o.GVK().Group
	if kind == "" {
		kind, group = o.Resource.Singular, o.Resource.Group
	}
	if group == "" {
		return kind
	}
	return kind + "." + group
}

// created is the object's creationTimestamp, for the table.
func created(o kube.Object) string {
	if o.Problem != nil {
		return "<" + problemWord(o.Problem) + ">"
	}
	m, err := meta.Accessor(o.Obj)
	if err != nil {
		return "<none>"
	}
	ts := m.GetCreationTimestamp()
	if ts.IsZero() {
		return "<none>"
	}
	return ts.UTC().Format(time.RFC3339)
}

// sortedJSON is the object as kubectl -o json prints it: keys sorted (it
// decodes what the server sends into maps), four-space indents.
func sortedJSON(o kube.Object, prefix string) ([]byte, error) {
	m, err := o.Map()
	if err != nil {
		return nil, err
	}
	return json.MarshalIndent(m, prefix, "    ")
}

// problemWord names a problem in a table cell.
func problemWord(err error) string {
	switch {
	case err == nil:
		return ""
	case strings.Contains(err.Error(), kube.ErrKMS.Error()):
		return "kms-encrypted"
	case strings.Contains(err.Error(), kube.ErrEncrypted.Error()):
		return "encrypted"
	case strings.Contains(err.Error(), kube.ErrUnknownType.Error()):
		return "unknown type"
	}
	return "undecodable"
}

// item submits one object of the List. An object that cannot be
// decoded is a comment in YAML and left out of JSON (its warning is on
// stderr).
func (p *objectPrinter) item(o kube.Object) {
	if o.Problem != nil {
		if p.out == "yaml" {
			line := problemComment(o)
			p.pool.submit(func() ([]byte, error) { return line, nil })
		}
		return
	}
	if p.out == "json" {
		sep := ",\n"
		if p.jsonItems == 0 {
			sep = ""
		}
		p.jsonItems++
		p.pool.submit(func() ([]byte, error) {
			const indent = "        "
			b, err := sortedJSON(o, indent)
			if err != nil {
				return nil, err
			}
			return append([]byte(sep+indent), b...), nil
		})
		return
	}
	p.pool.submit(func() ([]byte, error) {
		y, err := kube.YAML(o.Obj)
		if err != nil {
			return nil, err
		}
		// A list item: "- " before the first line, two spaces before the others.
		var b bytes.Buffer
		b.Grow(len(y) + 2*bytes.Count(y, []byte("\n")) + 2)
		b.WriteString("- ")
		for i, l := range bytes.SplitAfter(bytes.TrimSuffix(y, []byte("\n")), []byte("\n")) {
			if i > 0 {
				b.WriteString("  ")
			}
			b.Write(l)
		}
		b.WriteByte('\n')
		return b.Bytes(), nil
	})
}

// problemComment is the YAML comment that stands for an object that
// cannot be decoded.
func problemComment(o kube.Object) []byte {
	return []byte(fmt.Sprintf("# %s: %s\n", o.Key, strings.ReplaceAll(o.Problem.Error(), "\n", " ")))
}

// done closes what the stream left open.
func (p *objectPrinter) done() error {
	if p.n == 0 {
		return p.noneFound()
	}
	switch p.out {
	case "yaml", "json":
		if p.pool == nil { // one object: printed alone
			o := p.first
			if o.Problem != nil {
				if p.out == "yaml" {
					_, err := p.w.Write(problemComment(*o))
					return err
				}
				return nil
			}
			var b []byte
			var err error
			if p.out == "json" {
				b, err = sortedJSON(*o, "")
				b = append(b, '\n')
			} else {
				b, err = kube.YAML(o.Obj)
			}
			if err == nil {
				_, err = p.w.Write(b)
			}
			return err
		}
		footer := "kind: List\nmetadata:\n  resourceVersion: \"\"\n"
		if p.out == "json" {
			footer = "\n    ],\n    \"kind\": \"List\",\n    \"metadata\": {\n        \"resourceVersion\": \"\"\n    }\n}\n"
		}
		p.pool.submit(func() ([]byte, error) { return []byte(footer), nil })
		return p.pool.close()
	case "name":
		return nil
	}
	// kubectl's table: columns aligned, three spaces apart.
	tw := tabwriter.NewWriter(p.w, 0, 8, 3, ' ', 0)
	for _, row := range append([][]string{p.table.header}, p.table.rows...) {
		fmt.Fprintln(tw, strings.Join(row, "\t"))
	}
	return tw.Flush()
}

// noneFound says so as kubectl does: on stderr, exit 0 for a listing,
// NotFound (exit 3) for a named object.
func (p *objectPrinter) noneFound() error {
	if p.q.Name != "" {
		return fmt.Errorf("%w: %s %q not found", kube.ErrNotFound, p.q.Resource, p.q.Name)
	}
	if p.q.Namespace != "" {
		fmt.Fprintf(p.errw, "No resources found in %s namespace.\n", p.q.Namespace)
	} else {
		fmt.Fprintln(p.errw, "No resources found")
	}
	return nil
}

func k8sHistoryCommand() *cli.Command {
	return leaf(&cli.Command{
		Name:      "history",
		Usage:     "every stored version of an object, oldest first, with its revision; --diff shows what changed",
		ArgsUsage: "RESOURCE NAME",
		Description: "Each version prints as a YAML document headed by a comment with its etcd revision (its\n" +
			"resourceVersion); a deletion prints as a comment. With --diff, versions after the first print\n" +
			"as a unified diff against the one before.",
		Flags: k8sFlags(append(namespaceFlags()[:1],
			&cli.BoolFlag{Name: "diff", Usage: "print each version as a diff against the previous one"},
		)...),
		Action: func(c *cli.Context) error {
			args := c.Args().Slice()
			if len(args) != 2 {
				return usageError{fmt.Errorf("inspect k8s history needs RESOURCE NAME")}
			}
			d, err := k8sDecoder(c)
			if err != nil {
				return err
			}
			q := kube.Query{Namespace: c.String("namespace"), Name: args[1]}
			return withSource(c, func(src *inspect.Opened) error {
				if err := withCatalog(c, d, src, 0, args[0]); err != nil {
					return err
				}
				if q.Resource, err = d.Catalog.Lookup(args[0]); err != nil {
					return usageError{err}
				}
				h := historyPrinter{w: c.App.Writer, errw: c.App.ErrWriter, diff: c.Bool("diff")}
				if _, err := d.History(c.Context, src, q, h.print); err != nil {
					return err
				}
				if h.n == 0 {
					return fmt.Errorf("%w: %s %q in namespace %q has no stored version", kube.ErrNotFound, q.Resource, q.Name, q.Namespace)
				}
				return nil
			})
		},
	})
}

type historyPrinter struct {
	w, errw io.Writer
	diff    bool
	n       int
	prev    string
	prevRev int64
}

func (h *historyPrinter) print(v kube.Version) error {
	h.n++
	what := "modified"
	switch {
	case v.Deleted:
		what = "deleted"
	case v.CreateRevision == v.ModRevision:
		what = "created"
	}
	fmt.Fprintf(h.w, "---\n# %s at revision %d (%s)\n", v.Key, v.ModRevision, what)
	if v.Deleted {
		h.prev, h.prevRev = "", v.ModRevision
		return nil
	}
	text := ""
	if v.Problem != nil {
		text = fmt.Sprintf("# %s\n", v.Problem)
	} else {
		m, err := v.Map()
		if err != nil {
			return err
		}
		y, err := kube.YAML(m)
		if err != nil {
			return err
		}
		text = string(y)
	}
	out := text
	if h.diff && h.prev != "" {
		var err error
		out, err = difflib.GetUnifiedDiffString(difflib.UnifiedDiff{
			A: difflib.SplitLines(h.prev), B: difflib.SplitLines(text),
			FromFile: fmt.Sprintf("revision %d", h.prevRev), ToFile: fmt.Sprintf("revision %d", v.ModRevision), Context: 3,
		})
		if err != nil {
			return err
		}
	}
	h.prev, h.prevRev = text, v.ModRevision
	_, err := io.WriteString(h.w, out)
	return err
}

func k8sExtractCommand() *cli.Command {
	return leaf(&cli.Command{
		Name:      "extract",
		Usage:     "write objects as YAML files ready for kubectl apply: DIR/<namespace>/<resource>/<name>.yaml",
		ArgsUsage: "[RESOURCE...]",
		Description: "Without RESOURCE every resource but events is written. With -n (repeatable) only those\n" +
			"namespaces and their Namespace objects are written; cluster-scoped objects are written\n" +
			"without -n, or with --cluster-scoped, under DIR/_cluster/. Server-set fields (uid,\n" +
			"resourceVersion, creationTimestamp, managedFields, ownerReferences, status, a Service's cluster\n" +
			"IPs, a Pod's node) are removed unless --keep-server-fields. Objects a controller owns are left to\n" +
			"their owner unless --include-owned. Secrets are written only with --include-secrets (mode 0600),\n" +
			"decrypted with --encryption-config. DIR must not exist; it appears complete or not at all.\n" +
			"Objects that cannot be decoded are listed on stderr and end in exit 3; the rest are written.",
		Flags: k8sFlags(
			&cli.StringSliceFlag{Name: "namespace", Aliases: []string{"n"}, Usage: "a namespace to extract (repeatable; default: all)"},
			&cli.BoolFlag{Name: "cluster-scoped", Usage: "with -n: also the cluster-scoped objects"},
			&cli.StringFlag{Name: "output-dir", Required: true, Usage: "the directory to create"},
			&cli.Int64Flag{Name: "rev", Usage: "the revision to read at (default: the latest)"},
			&cli.BoolFlag{Name: "include-secrets", Usage: "write Secrets too (decrypted; files are mode 0600)"},
			&cli.BoolFlag{Name: "include-owned", Usage: "write objects a controller owns too (their ownerReferences removed)"},
			&cli.BoolFlag{Name: "keep-server-fields", Usage: "write objects as stored, server-set fields included"},
		),
		Action: func(c *cli.Context) error {
			d, err := k8sDecoder(c)
			if err != nil {
				return err
			}
			opts := kube.ExtractOptions{
				Dir: c.String("output-dir"), Namespaces: c.StringSlice("namespace"), ClusterScoped: c.Bool("cluster-scoped"),
				Rev: c.Int64("rev"), IncludeSecrets: c.Bool("include-secrets"), IncludeOwned: c.Bool("include-owned"),
				KeepServerFields: c.Bool("keep-server-fields"),
			}
			return withSource(c, func(src *inspect.Opened) error {
				if err := withCatalog(c, d, src, opts.Rev, c.Args().Slice()...); err != nil {
					return err
				}
				for _, a := range c.Args().Slice() {
					r, err := d.Catalog.Lookup(a)
					if err != nil {
						return usageError{err}
					}
					opts.Resources = append(opts.Resources, r)
				}
				rep, err := d.Extract(c.Context, src, opts)
				if rep != nil {
					printExtract(c.App.ErrWriter, opts.Dir, rep)
				}
				return revisionError(src, err)
			})
		},
	})
}

func printExtract(w io.Writer, dir string, rep *kube.ExtractReport) {
	fmt.Fprintf(w, "wrote %d objects at revision %d to %s\n", rep.Written, rep.Revision, dir)
	reasons := make([]string, 0, len(rep.Skipped))
	for r := range rep.Skipped {
		reasons = append(reasons, r)
	}
	sort.Strings(reasons)
	for _, r := range reasons {
		fmt.Fprintf(w, "skipped %d: %s\n", rep.Skipped[r], r)
	}
	for _, f := range rep.Failed {
		fmt.Fprintf(w, "not extracted: %s\n", f)
	}
}

// orderedPool runs render jobs on every core and writes their output in
// the order they were submitted; at most a few hundred are in flight.
type orderedPool struct {
	work  chan poolJob
	order chan chan poolResult
	done  chan error
}

type poolJob struct {
	render func() ([]byte, error)
	out    chan poolResult
}

type poolResult struct {
	b   []byte
	err error
}

func newOrderedPool(w io.Writer) *orderedPool {
	p := &orderedPool{work: make(chan poolJob, 128), order: make(chan chan poolResult, 128), done: make(chan error, 1)}
	for range runtime.GOMAXPROCS(0) {
		go func() {
			for j := range p.work {
				b, err := j.render()
				j.out <- poolResult{b, err}
			}
		}()
	}
	go func() {
		var err error
		for ch := range p.order {
			r := <-ch
			if err == nil {
				if err = r.err; err == nil {
					_, err = w.Write(r.b)
				}
			}
		}
		p.done <- err
	}()
	return p
}

func (p *orderedPool) submit(render func() ([]byte, error)) {
	ch := make(chan poolResult, 1)
	p.order <- ch
	p.work <- poolJob{render, ch}
}

// close waits for every job and returns the first error.
func (p *orderedPool) close() error {
	close(p.work)
	close(p.order)
	return <-p.done
}
