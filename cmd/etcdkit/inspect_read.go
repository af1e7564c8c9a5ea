package main

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/urfave/cli/v2"
	"go.etcd.io/etcd/api/v3/authpb"
	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/inspect"
)

// withSource opens the source flags' input with a progress bar for its
// scan, runs fn and cleans up.
func withSource(c *cli.Context, fn func(*inspect.Opened) error) error {
	src, err := openSource(c)
	if err != nil {
		return err
	}
	defer src.Close()
	bar := newProgress(c.App.ErrWriter, "reading")
	src.Progress = bar.Report
	defer bar.Done()
	return fn(src)
}

// formatIn refuses an output format a command does not print.
func formatIn(c *cli.Context, formats ...string) (string, error) {
	f := writeOut(c)
	if !slices.Contains(formats, f) {
		return "", usageError{fmt.Errorf("%s prints %s, not %s", c.Command.FullName(), strings.Join(formats, ", "), f)}
	}
	return f, nil
}

func inspectHistoryCommand() *cli.Command {
	return leaf(&cli.Command{
		Name:      "history",
		Usage:     "every put and delete of a key, prefix or range, in revision order, as etcdctl watch --rev replays them",
		ArgsUsage: "KEY [RANGE_END]",
		Description: "Output is etcdctl watch's: -w simple prints each event's type, key and value; -w json one\n" +
			"watch response per revision (a transaction's events together) with every event's revisions,\n" +
			"version and lease. Without KEY, --prefix selects every key.",
		Flags: append(sourceFlags(),
			&cli.BoolFlag{Name: "prefix", Usage: "the keys with KEY as prefix"},
			&cli.Int64Flag{Name: "from-rev", Aliases: []string{"rev"}, Usage: "the first revision (default: the oldest the data holds, its compaction revision)"},
			&cli.Int64Flag{Name: "to-rev", Usage: "the last revision (default: the latest)"},
		),
		Action: func(c *cli.Context) error {
			format, err := formatIn(c, "simple", "json")
			if err != nil {
				return err
			}
			args := c.Args().Slice()
			if len(args) > 2 || len(args) == 0 && !c.Bool("prefix") || len(args) == 2 && c.Bool("prefix") {
				return usageError{fmt.Errorf("inspect history needs KEY [RANGE_END], or --prefix with at most KEY")}
			}
			if to := c.Int64("to-rev"); to > 0 && to < c.Int64("from-rev") {
				return usageError{fmt.Errorf("--to-rev %d is below --from-rev %d", to, c.Int64("from-rev"))}
			}
			opts := inspect.HistoryOptions{KeyRange: keyRange(c, args), FromRev: c.Int64("from-rev"), ToRev: c.Int64("to-rev")}
			w := c.App.Writer
			return withSource(c, func(src *inspect.Opened) error {
				_, err := inspect.History(c.Context, src, opts, func(current int64, evs []*mvccpb.Event) error {
					return printEvents(w, format, current, evs)
				})
				return revisionError(src, err)
			})
		},
	})
}

// revisionError names the input in etcdctl's revision errors.
func revisionError(src *inspect.Opened, err error) error {
	if err == inspect.ErrCompacted || err == inspect.ErrFutureRev {
		return fmt.Errorf("%s: %w", src.Name, err)
	}
	return err
}

// printEvents prints the events of one revision as etcdctl watch does.
func printEvents(w io.Writer, format string, current int64, evs []*mvccpb.Event) error {
	if format == "json" {
		resp := clientv3.WatchResponse{Header: &etcdserverpb.ResponseHeader{Revision: current}}
		for _, e := range evs {
			resp.Events = append(resp.Events, (*clientv3.Event)(e))
		}
		b, err := json.Marshal(resp)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(w, string(b))
		return err
	}
	for _, e := range evs {
		if _, err := fmt.Fprintf(w, "%s\n%s\n%s\n", e.Type, e.Kv.Key, e.Kv.Value); err != nil {
			return err
		}
	}
	return nil
}

func inspectLeasesCommand() *cli.Command {
	return leaf(&cli.Command{
		Name:  "leases",
		Usage: "every lease with its granted TTL, the TTL a server would start from, and its attached live keys",
		Description: "Each lease prints as etcdctl lease timetolive does; remaining is what a server started on the\n" +
			"data counts down from (the checkpointed remaining TTL, else the granted TTL).",
		Flags: append(sourceFlags(), &cli.BoolFlag{Name: "keys", Usage: "list the attached keys, not only their count"}),
		Action: func(c *cli.Context) error {
			format, err := formatIn(c, "simple", "json", "table")
			if err != nil {
				return err
			}
			return withSource(c, func(src *inspect.Opened) error {
				leases, rev, err := inspect.Leases(c.Context, src)
				if err != nil {
					return err
				}
				return printLeases(c.App.Writer, format, c.Bool("keys"), rev, leases)
			})
		},
	})
}

func printLeases(w io.Writer, format string, keys bool, rev int64, leases []inspect.Lease) error {
	switch format {
	case "json":
		type lease struct {
			ID           int64    `json:"id"`
			IDHex        string   `json:"id_hex"`
			TTL          int64    `json:"granted_ttl"`
			RemainingTTL int64    `json:"remaining_ttl"`
			KeyCount     int      `json:"key_count"`
			Keys         []string `json:"keys,omitempty"`
		}
		out := struct {
			Revision int64   `json:"revision"`
			Leases   []lease `json:"leases"`
		}{Revision: rev, Leases: []lease{}}
		for _, l := range leases {
			e := lease{ID: l.ID, IDHex: fmt.Sprintf("%016x", l.ID), TTL: l.TTL, RemainingTTL: l.RemainingTTL, KeyCount: len(l.Keys)}
			if keys {
				e.Keys = l.Keys
			}
			out.Leases = append(out.Leases, e)
		}
		return printJSON(w, record{json: out})
	case "table":
		r := record{header: []string{"ID", "GRANTED TTL", "REMAINING TTL", "KEYS"}}
		for _, l := range leases {
			n := fmt.Sprint(len(l.Keys))
			if keys {
				n = strings.Join(l.Keys, "\n")
			}
			r.rows = append(r.rows, []string{fmt.Sprintf("%016x", l.ID), fmt.Sprintf("%ds", l.TTL), fmt.Sprintf("%ds", l.RemainingTTL), n})
		}
		return printTable(w, r)
	}
	fmt.Fprintf(w, "found %d leases\n", len(leases))
	for _, l := range leases {
		line := fmt.Sprintf("lease %016x granted with TTL(%ds), remaining(%ds)", l.ID, l.TTL, l.RemainingTTL)
		if keys {
			line += fmt.Sprintf(", attached keys(%v)", l.Keys)
		} else {
			line += fmt.Sprintf(", attached keys(%d)", len(l.Keys))
		}
		if _, err := fmt.Fprintln(w, line); err != nil {
			return err
		}
	}
	return nil
}

func inspectMembersCommand() *cli.Command {
	return leaf(&cli.Command{
		Name:  "members",
		Usage: "the cluster's members as the db says (etcdctl member list), and for a data dir as its WAL and .snap files say",
		Description: "A data dir's db, WAL and .snap files should agree; every difference is printed on stderr.\n" +
			"--from log prints the WAL's view instead of the db's.",
		Flags: append(sourceFlags(), &cli.StringFlag{Name: "from", Value: "db", Usage: "db, or log (a data dir's WAL and .snap files)"}),
		Action: func(c *cli.Context) error {
			format, err := formatIn(c, "simple", "json", "table")
			if err != nil {
				return err
			}
			from := c.String("from")
			if from != "db" && from != "log" {
				return usageError{fmt.Errorf("--from is db or log, not %q", from)}
			}
			return withSource(c, func(src *inspect.Opened) error {
				if from == "log" && src.WALDir == "" {
					return usageError{inspect.ErrNoWAL}
				}
				v, err := inspect.Members(c.Context, src)
				if err != nil {
					return err
				}
				ms := v.DB
				if from == "log" {
					if v.LogErr != nil {
						return v.LogErr
					}
					ms = v.Log
				}
				if v.LogErr != nil {
					fmt.Fprintf(c.App.ErrWriter, "warning: the WAL and .snap files could not be read for their membership: %v\n", v.LogErr)
				}
				for _, d := range v.Disagreements {
					fmt.Fprintf(c.App.ErrWriter, "warning: %s\n", d)
				}
				return printMembers(c.App.Writer, format, ms)
			})
		},
	})
}

// printMembers prints as etcdctl member list (the header's IDs 0: a db
// does not say which member answers).
func printMembers(w io.Writer, format string, ms []*etcdserverpb.Member) error {
	if format == "json" {
		return printJSON(w, record{json: &etcdserverpb.MemberListResponse{Header: &etcdserverpb.ResponseHeader{}, Members: ms}})
	}
	r := record{header: []string{"ID", "STATUS", "NAME", "PEER ADDRS", "CLIENT ADDRS", "IS LEARNER"}}
	for _, m := range ms {
		status := "started"
		if m.Name == "" {
			status = "unstarted"
		}
		r.rows = append(r.rows, []string{fmt.Sprintf("%x", m.ID), status, m.Name, strings.Join(m.PeerURLs, ","), strings.Join(m.ClientURLs, ","), fmt.Sprint(m.IsLearner)})
	}
	if format == "table" {
		return printTable(w, r)
	}
	return printSimple(w, r)
}

func inspectAuthCommand() *cli.Command {
	return leaf(&cli.Command{
		Name:        "auth",
		Usage:       "whether auth is enabled, the users with their roles and the roles with their permissions (never a password hash)",
		Description: "-w simple prints what etcdctl auth status, user get and role get print, for every user and role.",
		Flags:       sourceFlags(),
		Action: func(c *cli.Context) error {
			format, err := formatIn(c, "simple", "json")
			if err != nil {
				return err
			}
			return withSource(c, func(src *inspect.Opened) error {
				a, err := inspect.ReadAuth(c.Context, src)
				if err != nil {
					return err
				}
				return printAuth(c.App.Writer, format, a)
			})
		},
	})
}

func printAuth(w io.Writer, format string, a *inspect.Auth) error {
	if format == "json" {
		type perm struct {
			Type     string `json:"type"`
			Key      string `json:"key"`
			RangeEnd string `json:"range_end,omitempty"`
		}
		type role struct {
			Name        string `json:"name"`
			Permissions []perm `json:"permissions"`
		}
		type user struct {
			Name       string   `json:"name"`
			Roles      []string `json:"roles"`
			NoPassword bool     `json:"no_password,omitempty"`
		}
		out := struct {
			Enabled  bool   `json:"enabled"`
			Revision uint64 `json:"revision"`
			Users    []user `json:"users"`
			Roles    []role `json:"roles"`
		}{Enabled: a.Enabled, Revision: a.Revision, Users: []user{}, Roles: []role{}}
		for _, u := range a.Users {
			out.Users = append(out.Users, user{Name: string(u.Name), Roles: append([]string{}, u.Roles...), NoPassword: u.GetOptions().GetNoPassword()})
		}
		for _, r := range a.Roles {
			e := role{Name: string(r.Name), Permissions: []perm{}}
			for _, p := range r.KeyPermission {
				e.Permissions = append(e.Permissions, perm{Type: p.PermType.String(), Key: string(p.Key), RangeEnd: string(p.RangeEnd)})
			}
			out.Roles = append(out.Roles, e)
		}
		return printJSON(w, record{json: out})
	}
	fmt.Fprintln(w, "Authentication Status:", a.Enabled)
	fmt.Fprintln(w, "AuthRevision:", a.Revision)
	for _, u := range a.Users {
		fmt.Fprintf(w, "User: %s\nRoles:", u.Name)
		for _, r := range u.Roles {
			fmt.Fprintf(w, " %s", r)
		}
		fmt.Fprintln(w)
	}
	for _, r := range a.Roles {
		printRole(w, r)
	}
	return nil
}

// printRole is etcdctl role get's output.
func printRole(w io.Writer, r *authpb.Role) {
	fmt.Fprintf(w, "Role %s\n", r.Name)
	printPerms := func(types ...authpb.Permission_Type) {
		for _, p := range r.KeyPermission {
			if !slices.Contains(types, p.PermType) {
				continue
			}
			key, end := string(p.Key), string(p.RangeEnd)
			switch {
			case len(end) == 0:
				fmt.Fprintf(w, "\t%s\n", key)
				continue
			case end != "\x00":
				fmt.Fprintf(w, "\t[%s, %s)", key, end)
			default:
				fmt.Fprintf(w, "\t[%s, <open ended>", key)
			}
			if clientv3.GetPrefixRangeEnd(key) == end {
				fmt.Fprintf(w, " (prefix %s)", key)
			}
			fmt.Fprintln(w)
		}
	}
	fmt.Fprintln(w, "KV Read:")
	printPerms(authpb.Permission_READ, authpb.Permission_READWRITE)
	fmt.Fprintln(w, "KV Write:")
	printPerms(authpb.Permission_WRITE, authpb.Permission_READWRITE)
}

func inspectWALCommand() *cli.Command {
	return leaf(&cli.Command{
		Name:  "wal",
		Usage: "every record of a data dir's WAL, decoded, with what the db has applied and what a crash left unapplied",
		Description: "Each entry is applied (the db's consistent index has passed it), committed (the WAL says\n" +
			"committed, the db does not have it: etcd applies it when it starts) or uncommitted (it may never\n" +
			"be applied). -w json prints one JSON object per record, then the summary.",
		Flags: append(sourceFlags(),
			&cli.Uint64Flag{Name: "from-index", Usage: "the first entry index"},
			&cli.Uint64Flag{Name: "to-index", Usage: "the last entry index"},
			&cli.StringSliceFlag{Name: "type", Usage: "only these kinds: put, delete_range, txn, compaction, lease_grant, lease_revoke,\n\tlease_checkpoint, alarm, auth_*, cluster_member_attr_set, conf_change, empty, metadata, state, snapshot"},
		),
		Action: func(c *cli.Context) error {
			format, err := formatIn(c, "simple", "json")
			if err != nil {
				return err
			}
			opts := inspect.WALOptions{FromIndex: c.Uint64("from-index"), ToIndex: c.Uint64("to-index")}
			for _, t := range c.StringSlice("type") {
				for _, k := range strings.Split(t, ",") {
					if opts.Kinds == nil {
						opts.Kinds = map[string]bool{}
					}
					opts.Kinds[strings.TrimSpace(k)] = true
				}
			}
			return withSource(c, func(src *inspect.Opened) error {
				if src.WALDir == "" {
					return usageError{inspect.ErrNoWAL}
				}
				return runInspectWAL(c.App.Writer, format, src, opts)
			})
		},
	})
}

func runInspectWAL(w io.Writer, format string, src *inspect.Opened, opts inspect.WALOptions) error {
	marked := false
	enc := json.NewEncoder(w)
	sum, err := inspect.WAL(src, opts, func(r *inspect.WALRecord) error {
		if format == "json" {
			return enc.Encode(r)
		}
		if r.Record == "entry" && r.Status != inspect.StatusApplied && !marked {
			marked = true
			fmt.Fprintln(w, "# ---- the db has applied the entries above; the entries below are not in the db ----")
		}
		_, err := fmt.Fprintf(w, "%s:%d %s\n", r.File, r.Offset, r.Summary())
		return err
	})
	if err != nil {
		return err
	}
	db := fmt.Sprintf("db consistent index %d", sum.ConsistentIndex)
	if sum.DBErr != nil {
		db = fmt.Sprintf("db unreadable: %v", sum.DBErr)
	}
	if format == "json" {
		s := map[string]any{"summary": map[string]any{
			"records": sum.Records, "entries": sum.Entries, "first_index": sum.FirstIndex, "last_index": sum.LastIndex,
			"commit": sum.Commit, "consistent_index": sum.ConsistentIndex, "db": db,
			"applied": sum.Applied, "committed_not_applied": sum.Committed, "uncommitted": sum.Uncommitted,
		}}
		return enc.Encode(s)
	}
	_, err = fmt.Fprintf(w, "# %d records, entries %d..%d: %d applied (%s), %d committed but not in the db (etcd applies them at start), %d not committed (commit index %d)\n",
		sum.Records, sum.FirstIndex, sum.LastIndex, sum.Applied, db, sum.Committed, sum.Uncommitted, sum.Commit)
	return err
}

func inspectDUCommand() *cli.Command {
	return leaf(&cli.Command{
		Name:  "du",
		Usage: "what fills the db: space by key prefix (live keys, history, tombstones), and what compaction and defrag would free",
		Description: "Sizes are those of the key bucket's entries (revision key and stored KeyValue). HISTORY is\n" +
			"what compaction at the current revision frees; a defrag then returns it to the file system,\n" +
			"together with the free pages the db already has.",
		Flags: append(sourceFlags(),
			&cli.IntFlag{Name: "depth", Value: 2, Usage: "group keys by their prefix up to this many '/'"},
			&cli.IntFlag{Name: "top", Value: 20, Usage: "list this many prefixes, largest first (0: all)"},
		),
		Action: func(c *cli.Context) error {
			format, err := formatIn(c, "simple", "json", "table")
			if err != nil {
				return err
			}
			defer softMemoryLimitOf(keySetMemoryLimit)()
			return withSource(c, func(src *inspect.Opened) error {
				rep, err := inspect.DU(c.Context, src, inspect.DUOptions{Depth: c.Int("depth"), Top: c.Int("top")})
				if err != nil {
					return err
				}
				return printDU(c.App.Writer, format, rep)
			})
		},
	})
}

func printDU(w io.Writer, format string, rep *inspect.DUReport) error {
	if format == "json" {
		return printJSON(w, record{json: rep})
	}
	r := record{header: []string{"PREFIX", "LIVE KEYS", "LIVE SIZE", "REVISIONS", "SIZE", "HISTORY", "TOMBSTONES"}}
	row := func(u inspect.Usage) []string {
		return []string{u.Prefix, fmt.Sprint(u.LiveKeys), humanBytes(u.LiveBytes), fmt.Sprint(u.Revisions), humanBytes(u.Bytes), humanBytes(u.HistoryBytes()), fmt.Sprint(u.Tombstones)}
	}
	for _, u := range rep.Prefixes {
		r.rows = append(r.rows, row(u))
	}
	if rep.Other.Revisions > 0 {
		r.rows = append(r.rows, row(rep.Other))
	}
	r.rows = append(r.rows, row(rep.Total))
	var err error
	if format == "table" {
		err = printTable(w, r)
	} else {
		r.rows = append([][]string{r.header}, r.rows...)
		err = printSimple(w, r)
	}
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "db file %s, pages in use %s, free pages %s: a defrag now returns about %s.\n"+
		"Compaction at revision %d (compacted at %d) frees about %s of history; defrag afterwards to return it.\n",
		humanBytes(rep.FileBytes), humanBytes(rep.InUseBytes), humanBytes(rep.FreeBytes), humanBytes(rep.FreeBytes),
		rep.Revision, rep.CompactRevision, humanBytes(rep.Total.HistoryBytes()))
	return err
}
