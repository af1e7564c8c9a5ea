package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/urfave/cli/v2"
	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/inspect"
)

// sourceFlags name what an inspect command reads.
func sourceFlags() []cli.Flag {
	return append([]cli.Flag{
		&cli.StringFlag{Name: "db", Aliases: []string{"snapshot"}, Usage: "a snapshot file or a member's db file"},
		&cli.StringFlag{Name: "data-dir", Usage: "a member's data dir (stopped, or a copy)"},
		&cli.StringFlag{Name: "wal-dir", Usage: "the data dir's WAL dir, if not inside it"},
		&cli.StringFlag{Name: "temp-dir", Usage: "with --repo: where the backup is unpacked for the inspection (removed afterwards; default: the system's)"},
	}, backupSourceFlags("a backup repository (with --backup)")...)
}

// backupSourceFlags name one backup in a repository as a command's input:
// --repo (ETCDKIT_REPO), --backup ID|latest and --identity.
func backupSourceFlags(repoUsage string) []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "repo", EnvVars: []string{"ETCDKIT_REPO"}, Usage: repoUsage},
		&cli.StringFlag{Name: "backup", Value: "latest", Usage: "with --repo: the backup ID, or latest"},
		flagIdentity,
	}
}

// openSource resolves the source flags.
func openSource(c *cli.Context) (*inspect.Opened, error) {
	ids, err := identities(c)
	if err != nil {
		return nil, err
	}
	s := inspect.Source{
		File: c.String("db"), DataDir: c.String("data-dir"), WALDir: c.String("wal-dir"),
		TempDir: c.String("temp-dir"), Identities: ids, LockTimeout: lockTimeout(c),
	}
	if c.IsSet("repo") || c.String("repo") != "" {
		s.Repo, s.Backup = c.String("repo"), c.String("backup")
	}
	o, err := s.Open(c.Context)
	if err != nil && err == inspect.ErrSource {
		return nil, usageError{err}
	}
	return o, err
}

func inspectCommand() *cli.Command {
	return &cli.Command{
		Name:  "inspect",
		Usage: "read what a snapshot, a member's db or data dir, or a stored backup holds, with no server",
		Subcommands: []*cli.Command{leaf(&cli.Command{
			Name:      "get",
			Usage:     "keys and values at the latest or any uncompacted revision, as etcdctl get prints them",
			ArgsUsage: "KEY [RANGE_END]",
			Description: "Output is etcdctl get's (-w simple, json or fields), as if etcd were started on the data;\n" +
				"the header's cluster_id and member_id are 0 (a db does not say which member answers).",
			Flags: append(sourceFlags(),
				&cli.BoolFlag{Name: "prefix", Usage: "get the keys with KEY as prefix"},
				&cli.BoolFlag{Name: "from-key", Usage: "get the keys that are >= KEY"},
				&cli.Int64Flag{Name: "rev", Usage: "the revision to read at (default: the latest)"},
				&cli.Int64Flag{Name: "limit", Usage: "at most this many keys"},
				&cli.BoolFlag{Name: "keys-only", Usage: "keys only, no values"},
				&cli.BoolFlag{Name: "count-only", Usage: "only the count (with -w fields, as etcdctl)"},
				&cli.BoolFlag{Name: "print-value-only", Usage: "values only (with -w simple, as etcdctl)"},
				&cli.StringFlag{Name: "sort-by", Usage: "CREATE, KEY, MODIFY, VALUE or VERSION"},
				&cli.StringFlag{Name: "order", Usage: "ASCEND or DESCEND (ASCEND by default)"},
			),
			Action: runInspectGet,
		}),
			inspectHistoryCommand(), inspectLeasesCommand(), inspectMembersCommand(),
			inspectAuthCommand(), inspectWALCommand(), inspectDUCommand(), inspectK8sCommand(),
		},
	}
}

// sortOrders and sortTargets are etcdctl get's --order and --sort-by.
var (
	sortOrders = map[string]etcdserverpb.RangeRequest_SortOrder{
		"": etcdserverpb.RangeRequest_NONE, "ASCEND": etcdserverpb.RangeRequest_ASCEND, "DESCEND": etcdserverpb.RangeRequest_DESCEND,
	}
	sortTargets = map[string]etcdserverpb.RangeRequest_SortTarget{
		"": etcdserverpb.RangeRequest_KEY, "KEY": etcdserverpb.RangeRequest_KEY, "CREATE": etcdserverpb.RangeRequest_CREATE,
		"MODIFY": etcdserverpb.RangeRequest_MOD, "VALUE": etcdserverpb.RangeRequest_VALUE, "VERSION": etcdserverpb.RangeRequest_VERSION,
	}
)

// getOptions reads etcdctl get's arguments and flags, with its refusals.
func getOptions(c *cli.Context) (inspect.GetOptions, error) {
	args := c.Args().Slice()
	bad := func(format string, a ...any) (inspect.GetOptions, error) {
		return inspect.GetOptions{}, usageError{fmt.Errorf(format, a...)}
	}
	if len(args) == 0 || len(args) > 2 {
		return bad("inspect get needs one argument as key and an optional argument as range_end")
	}
	if c.Bool("prefix") && c.Bool("from-key") {
		return bad("`--prefix` and `--from-key` cannot be set at the same time, choose one")
	}
	if c.Bool("keys-only") && c.Bool("count-only") {
		return bad("`--keys-only` and `--count-only` cannot be set at the same time, choose one")
	}
	if (c.Bool("prefix") || c.Bool("from-key")) && len(args) > 1 {
		return bad("too many arguments, only accept one argument when `--prefix` or `--from-key` is set")
	}
	o := inspect.GetOptions{Rev: c.Int64("rev"), Limit: c.Int64("limit"), KeysOnly: c.Bool("keys-only"), CountOnly: c.Bool("count-only")}
	o.KeyRange = keyRange(c, args)
	var ok bool
	if o.SortOrder, ok = sortOrders[strings.ToUpper(c.String("order"))]; !ok {
		return bad("bad sort order %v", c.String("order"))
	}
	if o.SortTarget, ok = sortTargets[strings.ToUpper(c.String("sort-by"))]; !ok {
		return bad("bad sort target %v", c.String("sort-by"))
	}
	format := writeOut(c)
	switch {
	case o.CountOnly && format != "fields":
		return bad("--count-only is only for `--write-out=fields`")
	case c.Bool("print-value-only") && format != "simple":
		return bad("print-value-only is only for `--write-out=simple`")
	case format == "table":
		return bad("table is not a format of get (simple, json or fields)")
	}
	return o, nil
}

func runInspectGet(c *cli.Context) error {
	opts, err := getOptions(c)
	if err != nil {
		return err
	}
	return withSource(c, func(src *inspect.Opened) error {
		resp, err := inspect.Get(c.Context, src, opts)
		if err != nil {
			return revisionError(src, err)
		}
		return printGet(c.App.Writer, writeOut(c), c.Bool("print-value-only"), resp)
	})
}

// keyRange is the range etcdctl makes of KEY [RANGE_END] with --prefix or
// --from-key (flags a command does not define read as unset).
func keyRange(c *cli.Context, args []string) inspect.KeyRange {
	var r inspect.KeyRange
	if len(args) > 0 {
		r.Key = []byte(args[0])
	}
	switch {
	case len(args) == 2:
		r.RangeEnd = []byte(args[1])
	case c.Bool("prefix"):
		r.RangeEnd = []byte(clientv3.GetPrefixRangeEnd(string(r.Key)))
		if len(r.Key) == 0 {
			r.Key, r.RangeEnd = []byte{0}, []byte{0}
		}
	case c.Bool("from-key"):
		if len(r.Key) == 0 {
			r.Key = []byte{0}
		}
		r.RangeEnd = []byte{0}
	}
	return r
}

// printGet prints a Range response as etcdctl's printers do.
func printGet(w io.Writer, format string, valueOnly bool, r *etcdserverpb.RangeResponse) error {
	switch format {
	case "json":
		b, err := json.Marshal(r)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(w, string(b))
		return err
	case "fields":
		h := r.GetHeader()
		fmt.Fprintln(w, `"ClusterID" :`, h.GetClusterId())
		fmt.Fprintln(w, `"MemberID" :`, h.GetMemberId())
		if h.GetRevision() > 0 {
			fmt.Fprintln(w, `"Revision" :`, h.GetRevision())
		}
		fmt.Fprintln(w, `"RaftTerm" :`, h.GetRaftTerm())
		for _, kv := range r.GetKvs() {
			printFieldsKV(w, kv)
		}
		fmt.Fprintln(w, `"More" :`, r.GetMore())
		fmt.Fprintln(w, `"Count" :`, r.GetCount())
		return nil
	}
	for _, kv := range r.GetKvs() {
		if !valueOnly {
			fmt.Fprintln(w, string(kv.GetKey()))
		}
		fmt.Fprintln(w, string(kv.GetValue()))
	}
	return nil
}

func printFieldsKV(w io.Writer, kv *mvccpb.KeyValue) {
	fmt.Fprintf(w, "\"Key\" : %q\n", string(kv.GetKey()))
	fmt.Fprintf(w, "\"CreateRevision\" : %d\n", kv.GetCreateRevision())
	fmt.Fprintf(w, "\"ModRevision\" : %d\n", kv.GetModRevision())
	fmt.Fprintf(w, "\"Version\" : %d\n", kv.GetVersion())
	fmt.Fprintf(w, "\"Value\" : %q\n", string(kv.GetValue()))
	fmt.Fprintf(w, "\"Lease\" : %d\n", kv.GetLease())
}
