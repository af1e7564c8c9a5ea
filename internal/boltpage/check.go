// Package boltpage reads bolt's on-disk format below bbolt's API, with
// pread and no memory map: the meta pages, and the one-pass scanner that
// walks every tree in key order while checking what bbolt's Tx.Check checks
// (Check). Every command reads a db through Check before bbolt (package
// boltdb) may touch it. One function writes: StoreEmptyFreelist, the
// restore's edit of its own fresh copy.
package boltpage

import (
	"errors"
	"fmt"
	"time"
)

// ErrInUse reports a db whose lock is held by another process (usually a
// running etcd) for longer than the caller's timeout.
var ErrInUse = errors.New("db is in use by another process")

// ErrNotBolt reports a file that is not a bolt database (or whose meta pages
// are both damaged).
var ErrNotBolt = errors.New("not a bolt database (bad magic, version or meta checksum)")

// ErrDamaged reports a bolt file whose pages cannot be read safely: it is
// truncated, or bolt panicked or faulted on a damaged page.
var ErrDamaged = errors.New("damaged bolt file")

// Check reads the bolt file at path once with the pread scanner and
// returns its verdict: nil, or the error of Open or Scan (ErrNotBolt,
// ErrDamaged, ErrIntegrity, ErrInUse). progress, when set, is told the
// bytes read as Scan tells it.
// It returns the names of the top-level buckets.
//
// fn, when set, sees every entry as Scan passes it (a caller that needs one
// pass over the entries anyway saves a read); its error stops the check.
// What fn learned counts only if Check returns nil.
func Check(path string, timeout time.Duration, progress func(done, total int64), fn func(Entry) error) ([]string, error) {
	top, _, err := CheckPages(path, timeout, progress, fn)
	return top, err
}

// CheckPages is Check that also returns the page counts of the scan (the
// free pages are what a defrag would give back).
func CheckPages(path string, timeout time.Duration, progress func(done, total int64), fn func(Entry) error) ([]string, Pages, error) {
	f, err := Open(path, timeout)
	if err != nil {
		return nil, Pages{}, err
	}
	defer f.Close()
	f.Progress = progress
	var top []string
	pages, err := f.Scan(func(e Entry) error {
		if e.Depth == 0 && e.Bucket {
			top = append(top, string(e.Key))
		}
		if fn != nil {
			return fn(e)
		}
		return nil
	})
	if err != nil {
		return nil, Pages{}, fmt.Errorf("%s: %w", path, err)
	}
	return top, pages, nil
}
