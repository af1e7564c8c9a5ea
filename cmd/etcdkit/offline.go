package main

import (
	"fmt"
	"os"
	"runtime/debug"

	"github.com/urfave/cli/v2"

	"github.com/etcdkit/etcdkit/hashkv"
	"github.com/etcdkit/etcdkit/snapshot"
)

func output(c *cli.Context, r record) error {
	p, err := newPrinter(writeOut(c))
	if err != nil {
		return usageError{err}
	}
	return p(c.App.Writer, r)
}

func snapshotCommand() *cli.Command {
	return &cli.Command{
		Name:  "snapshot",
		Usage: "save, inspect and restore etcd snapshots",
		Subcommands: []*cli.Command{saveCommand(), restoreCommand(), leaf(&cli.Command{
			Name:      "status",
			Usage:     "print hash, revision, total keys, size and storage version of a snapshot or db file",
			ArgsUsage: "FILE",
			Action: func(c *cli.Context) error {
				if err := needArgs(c, 1, "one snapshot or db FILE"); err != nil {
					return err
				}
				defer softMemoryLimit()()
				bar := newProgress(c.App.ErrWriter, "reading")
				st, err := snapshot.ReadStatusWith(c.Args().First(), snapshot.StatusOptions{LockTimeout: lockTimeout(c), Progress: bar.Report})
				bar.Done()
				if err != nil {
					return err
				}
				return output(c, statusRecord(st))
			},
		})},
	}
}

// softMemoryLimit asks the Go runtime to collect garbage before the heap
// passes 64 MiB (unless GOMEMLIMIT says otherwise), until the returned
// function restores the previous limit: status's live-key set, or a
// backup's zstd window and stream summary, are a few tens of MB, and
// without a limit the collector lets garbage (a snapshot stream makes
// much) grow to as much again. It is soft: a larger live heap is never
// refused.
func softMemoryLimit() (restore func()) { return softMemoryLimitOf(64 << 20) }

// softMemoryLimitOf is softMemoryLimit at n bytes. A snapshot stream
// allocates its own size in message copies (etcd's client unmarshals each
// 32 KiB chunk): with its 8 GB summary (about 45 MiB live) a 64 MiB limit
// made the collector run 2,853 times in one backup (1.5x slower), 80 MiB
// 490 times, with the peak RSS still under 128 MiB.
func softMemoryLimitOf(n int64) (restore func()) {
	if os.Getenv("GOMEMLIMIT") != "" {
		return func() {}
	}
	prev := debug.SetMemoryLimit(n)
	return func() { debug.SetMemoryLimit(prev) }
}

// streamMemoryLimit is the soft limit of a snapshot stream (backup
// create, snapshot save).
const streamMemoryLimit = 80 << 20

// keySetMemoryLimit is the soft limit of the commands that keep a set of
// the db's keys (inspect du: 16 bytes per key plus the map's own, about
// 50 MB for two million keys): without it the garbage of the set's growth
// doubles the heap.
const keySetMemoryLimit = 80 << 20

func statusRecord(st snapshot.Status) record {
	return record{
		json:   st,
		header: []string{"hash", "revision", "total keys", "total size", "version"},
		rows: [][]string{{
			fmt.Sprintf("%x", st.Hash), fmt.Sprint(st.Revision), fmt.Sprint(st.TotalKey),
			humanBytes(st.TotalSize), st.Version,
		}},
		fields: [][2]string{
			{"Hash", fmt.Sprint(st.Hash)}, {"Revision", fmt.Sprint(st.Revision)},
			{"Keys", fmt.Sprint(st.TotalKey)}, {"Size", fmt.Sprint(st.TotalSize)},
			{"Version", st.Version},
		},
	}
}

func hashkvCommand() *cli.Command {
	return leaf(&cli.Command{
		Name:      "hashkv",
		Usage:     "print the KV history hash (as the HashKV RPC) of a db file or data dir",
		ArgsUsage: "FILE|DATA-DIR",
		Flags: []cli.Flag{
			&cli.Int64Flag{Name: "rev", Usage: "maximum revision to hash (default: latest revision)"},
		},
		Action: func(c *cli.Context) error {
			if err := needArgs(c, 1, "one db FILE or DATA-DIR"); err != nil {
				return err
			}
			res, err := hashkv.Compute(hashkv.DBPath(c.Args().First()), c.Int64("rev"), lockTimeout(c))
			if err != nil {
				return err
			}
			return output(c, hashkvRecord(res))
		},
	})
}

func hashkvRecord(r hashkv.Result) record {
	return record{
		json:   r,
		header: []string{"hash", "hash revision", "compact revision"},
		rows:   [][]string{{fmt.Sprint(r.Hash), fmt.Sprint(r.HashRevision), fmt.Sprint(r.CompactRevision)}},
		fields: [][2]string{
			{"Hash", fmt.Sprint(r.Hash)}, {"Hash revision", fmt.Sprint(r.HashRevision)},
			{"Compact revision", fmt.Sprint(r.CompactRevision)},
		},
	}
}
