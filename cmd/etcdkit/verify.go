package main

import (
	"fmt"
	"io"

	"github.com/urfave/cli/v2"

	"github.com/etcdkit/etcdkit/verify"
)

func verifyCommand() *cli.Command {
	return &cli.Command{
		Name:  "verify",
		Usage: "check a snapshot or a stopped member's data dir for damage, without writing to it",
		Subcommands: []*cli.Command{
			leaf(&cli.Command{
				Name:      "snapshot",
				Usage:     "check a snapshot file: sha256 trailer, bolt consistency, etcd schema",
				ArgsUsage: "FILE",
				Action: func(c *cli.Context) error {
					if err := needArgs(c, 1, "one snapshot FILE"); err != nil {
						return err
					}
					bar := newProgress(c.App.ErrWriter, "verifying")
					r, err := verify.Snapshot(c.Args().First(), verify.Options{LockTimeout: lockTimeout(c), Progress: bar.Report})
					bar.Done()
					if err != nil {
						return err
					}
					return printReport(c, r)
				},
			}),
			leaf(&cli.Command{
				Name:      "data-dir",
				Usage:     "check a data dir: its db as verify snapshot does, the WAL, the .snap files and how they agree",
				ArgsUsage: "DIR",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "wal-dir", Usage: "the WAL directory when it is not DIR/member/wal"},
				},
				Action: func(c *cli.Context) error {
					if err := needArgs(c, 1, "one data DIR"); err != nil {
						return err
					}
					bar := newProgress(c.App.ErrWriter, "verifying db")
					r, err := verify.DataDir(c.Args().First(), c.String("wal-dir"), verify.Options{LockTimeout: lockTimeout(c), Progress: bar.Report})
					bar.Done()
					if err != nil {
						return err
					}
					return printReport(c, r)
				},
			}),
		},
	}
}

// printReport writes the report (problems first, then the summary) and
// turns corruption into exit code 5.
func printReport(c *cli.Context, r *verify.Report) error {
	w := c.App.Writer
	switch writeOut(c) {
	case "json":
		if err := printJSON(w, record{json: r}); err != nil {
			return err
		}
	case "table":
		if len(r.Problems) > 0 {
			p := record{header: []string{"severity", "check", "file", "offset", "key", "problem"}}
			for _, pr := range r.Problems {
				p.rows = append(p.rows, []string{string(pr.Severity), pr.Check, pr.File, offset(pr.Offset), pr.Key, pr.Message})
			}
			if err := printTable(w, p); err != nil {
				return err
			}
		}
		s := record{header: []string{"check", "result", "problems", "what"}}
		for _, ch := range r.Checks {
			s.rows = append(s.rows, []string{ch.Name, result(ch.OK), fmt.Sprint(ch.Problems), ch.Detail})
		}
		if err := printTable(w, s); err != nil {
			return err
		}
	case "fields":
		for _, ch := range r.Checks {
			fmt.Fprintf(w, "%q : %s (%d problems) %s\n", ch.Name, result(ch.OK), ch.Problems, ch.Detail)
		}
		for _, pr := range r.Problems {
			fmt.Fprintf(w, "%q : %s %s\n", "Problem", pr.Severity, problemLine(pr))
		}
	default:
		printSimpleReport(w, r)
	}
	if r.Corrupt() {
		return verify.Corruption{Target: r.Target, Summary: summary(r)}
	}
	return nil
}

func printSimpleReport(w io.Writer, r *verify.Report) {
	for _, pr := range r.Problems {
		fmt.Fprintf(w, "%s: %s\n", pr.Severity, problemLine(pr))
	}
	for _, ch := range r.Checks {
		fmt.Fprintf(w, "%-16s %-7s %s\n", ch.Name, result(ch.OK), ch.Detail)
	}
	fmt.Fprintf(w, "%s: %s\n", r.Target, summary(r))
}

func problemLine(p verify.Problem) string {
	loc := p.File
	if p.Offset > 0 {
		loc += "@" + offset(p.Offset)
	}
	if p.Key != "" {
		loc += " " + p.Key
	}
	return fmt.Sprintf("[%s] %s: %s", p.Check, loc, p.Message)
}

func summary(r *verify.Report) string {
	switch {
	case len(r.Problems) == 0:
		return "OK"
	case r.Corrupt():
		return fmt.Sprintf("CORRUPT, %d problem(s); do not start etcd on it: restore the member from a snapshot or remove and re-add it", len(r.Problems))
	}
	return fmt.Sprintf("OK with %d repairable problem(s): etcd repairs a torn WAL tail when it starts", len(r.Problems))
}

func offset(n int64) string {
	if n == 0 {
		return ""
	}
	return fmt.Sprint(n)
}

func result(ok bool) string {
	if ok {
		return "ok"
	}
	return "FAILED"
}
