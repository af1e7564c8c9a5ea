package main

import (
	"fmt"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/etcdkit/etcdkit/defrag"
)

func defragCommand() *cli.Command {
	return leaf(&cli.Command{
		Name:  "defrag",
		Usage: "defragment a stopped member's db offline (--data-dir or --db)",
		Description: "Copies every bucket, key and value into a new file next to the db, without the free\n" +
			"pages, and renames it over the original only when it is complete and synced. Stop etcd\n" +
			"first: a db locked by a running etcd is refused after --timeout.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "data-dir", Usage: "data dir of a stopped member (its member/snap/db)"},
			&cli.StringFlag{Name: "db", Usage: "a bolt db file"},
		},
		Action: func(c *cli.Context) error {
			if err := needArgs(c, 0, "no arguments"); err != nil {
				return err
			}
			path := c.String("db")
			switch {
			case c.IsSet("db") == c.IsSet("data-dir"):
				return usageError{fmt.Errorf("give exactly one of --data-dir and --db")}
			case c.IsSet("data-dir"):
				path = defrag.DBPath(c.String("data-dir"))
			}
			var bar *progressBar
			opts := defrag.Options{LockTimeout: lockTimeout(c), Progress: func(done, total int64) {
				if bar == nil {
					bar = newProgress(c.App.ErrWriter, "defragmenting", total)
				}
				bar.Set(done)
			}}
			res, err := defrag.Defrag(c.Context, path, opts)
			bar.Done()
			if err != nil {
				return err
			}
			return output(c, defragRecord(res))
		},
	})
}

func defragRecord(r defrag.Result) record {
	took := r.Took.Round(time.Millisecond).String()
	return record{
		json:   r,
		header: []string{"db", "size before", "in use before", "size after", "took"},
		rows:   [][]string{{r.Path, humanBytes(r.Before), humanBytes(r.InUse), humanBytes(r.After), took}},
		fields: [][2]string{
			{"DB", r.Path}, {"SizeBefore", fmt.Sprint(r.Before)}, {"SizeInUse", fmt.Sprint(r.InUse)},
			{"SizeAfter", fmt.Sprint(r.After)}, {"Took", took},
		},
	}
}
