package main

import (
	"fmt"

	"github.com/dustin/go-humanize"
	"github.com/urfave/cli/v2"
)

// flagRateLimit caps a snapshot stream (snapshot save, backup create, the
// scheduler's backups).
var flagRateLimit = &cli.StringFlag{Name: "rate-limit", Usage: "read the snapshot at most this fast, per second (e.g. 50MiB); default: as fast as the member sends (see docs/bench.md for what a backup costs the cluster's latency)"}

// flagMemberHashKV asks the member for its HashKV to compare with the
// snapshot's.
var flagMemberHashKV = &cli.BoolFlag{Name: "member-hashkv", Value: true, Usage: "compare the snapshot's HashKV with the member's (its HashKV holds up the member's writes while it hashes: about 0.4 s per 600 MB on the bench)"}

// rateLimit is --rate-limit in bytes per second, 0 when unset.
func rateLimit(c *cli.Context) (int64, error) {
	s := c.String("rate-limit")
	if s == "" {
		return 0, nil
	}
	n, err := humanize.ParseBytes(s)
	if err != nil || n < 64<<10 || n > 1<<40 {
		return 0, usageError{fmt.Errorf("--rate-limit %q: a size per second from 64KiB, such as 50MiB", s)}
	}
	return int64(n), nil
}
