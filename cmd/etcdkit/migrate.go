package main

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/etcdkit/etcdkit/migrate"
)

func migrateCommand() *cli.Command {
	return leaf(&cli.Command{
		Name:  "migrate",
		Usage: "change a stopped member's storage version so another etcd minor version starts on it (etcdutl migrate)",
		Description: "As etcdutl migrate, with etcd's own schema code; the db is migrated as a copy that replaces it\n" +
			"last, so a failure leaves the data dir unchanged. Migrate every member before it starts on the\n" +
			"target version (for a downgrade to 3.5: stop it, migrate, start etcd 3.5).",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "data-dir", Required: true, Usage: "the stopped member's data dir"},
			&cli.StringFlag{Name: "target-version", Required: true, Usage: `the etcd version to migrate to, "X.Y" (3.5 or newer)`},
			&cli.BoolFlag{Name: "force", Usage: "set the storage version even when the migration fails (not recommended)"},
		},
		Action: func(c *cli.Context) error {
			if _, err := migrate.ParseTarget(c.String("target-version")); err != nil {
				return usageError{err}
			}
			res, err := migrate.Run(migrate.Options{
				DataDir: c.String("data-dir"), Target: c.String("target-version"), Force: c.Bool("force"), LockTimeout: lockTimeout(c),
			})
			if err != nil {
				return err
			}
			switch {
			case !res.Changed:
				fmt.Fprintf(c.App.Writer, "storage version up-to-date: %s\n", res.To)
			case res.Forced:
				fmt.Fprintf(c.App.Writer, "migration failed; storage version forced from %s to %s\n", res.From, res.To)
			default:
				fmt.Fprintf(c.App.Writer, "migrated storage version from %s to %s\n", res.From, res.To)
			}
			return nil
		},
	})
}
