// Package verify checks etcd's files offline without writing to them: a
// snapshot's sha256 trailer, bolt's consistency, etcd's schema in the db
// (buckets, meta keys, revision keys, stored KeyValues, leases, members), and
// in a data dir the WAL (names, sequence, framing, the CRC-32C chain), the
// .snap files and how the db, the WAL and the snapshots agree.
//
// Every problem names its file and offset or key; a torn WAL tail (a crash
// in the middle of a write, which etcd repairs at start) is told apart from
// corruption, which etcd cannot repair.
package verify

import (
	"errors"
	"fmt"
	"time"
)

// Severity says what a problem means for the operator.
type Severity string

const (
	// Corrupt: data is damaged or inconsistent; etcd may refuse to start
	// or serve wrong data. Restore the member from a backup or re-add it.
	Corrupt Severity = "corrupt"
	// Repairable: a torn write at the end of the WAL, which etcd truncates
	// when it starts; the last unsynced writes are lost, nothing else.
	Repairable Severity = "repairable"
)

// Problem is one finding.
type Problem struct {
	Check    string   `json:"check"`
	Severity Severity `json:"severity"`
	File     string   `json:"file"`
	Offset   int64    `json:"offset,omitempty"` // byte offset in File, when it applies
	Key      string   `json:"key,omitempty"`    // bucket/key, when it applies
	Message  string   `json:"message"`
}

// Check is one line of the summary: what was checked and how it went.
type Check struct {
	Name     string `json:"name"`
	OK       bool   `json:"ok"`
	Detail   string `json:"detail"`
	Problems int    `json:"problems"`
}

// Report is the result of a verification.
type Report struct {
	Target   string        `json:"target"`
	Checks   []Check       `json:"checks"`
	Problems []Problem     `json:"problems"`
	Took     time.Duration `json:"took"`
}

// ErrCorrupt is what Corruption errors are: something the report found
// is corrupt.
var ErrCorrupt = errors.New("corrupt")

// Corruption is the one-line verdict on a report with corrupt problems;
// errors.Is(err, ErrCorrupt) holds for it.
type Corruption struct{ Target, Summary string }

func (c Corruption) Error() string        { return c.Target + ": " + c.Summary }
func (c Corruption) Is(target error) bool { return target == ErrCorrupt }

// Corrupt reports whether any problem is corruption (not only a repairable
// torn WAL tail).
func (r *Report) Corrupt() bool {
	for _, p := range r.Problems {
		if p.Severity == Corrupt {
			return true
		}
	}
	return false
}

// maxPerCheck bounds the problems one check lists; a damaged db could
// otherwise yield one per key.
const maxPerCheck = 20

// checker collects the problems of one named check.
type checker struct {
	rep      *Report
	name     string
	detail   string
	n        int
	dropped  int
	file     string
	severity Severity
}

func (r *Report) check(name, file string) *checker {
	return &checker{rep: r, name: name, file: file, severity: Corrupt}
}

// add records a problem at offset off (-1: none) or key (""), formatted.
func (c *checker) add(off int64, key string, format string, args ...any) {
	c.n++
	if c.n > maxPerCheck {
		c.dropped++
		return
	}
	if off < 0 {
		off = 0
	}
	c.rep.Problems = append(c.rep.Problems, Problem{
		Check: c.name, Severity: c.severity, File: c.file, Offset: off, Key: key, Message: fmt.Sprintf(format, args...),
	})
}

// done adds the summary line.
func (c *checker) done(detail string, args ...any) {
	d := fmt.Sprintf(detail, args...)
	if c.dropped > 0 {
		c.rep.Problems = append(c.rep.Problems, Problem{
			Check: c.name, Severity: c.severity, File: c.file,
			Message: fmt.Sprintf("and %d more problems of this kind", c.dropped),
		})
	}
	c.rep.Checks = append(c.rep.Checks, Check{Name: c.name, OK: c.n == 0, Detail: d, Problems: c.n})
}
