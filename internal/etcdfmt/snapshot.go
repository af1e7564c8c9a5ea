package etcdfmt

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
)

// SnapshotTrailerLen is the size of the sha256 digest that the Maintenance
// Snapshot RPC appends after the bolt file.
const SnapshotTrailerLen = sha256.Size

// HasSnapshotTrailer reports whether a snapshot file of the given size carries
// the sha256 trailer: a bolt file is a whole number of pages (a multiple of
// 512 bytes), so a remainder of exactly 32 bytes is the digest.
func HasSnapshotTrailer(size int64) bool {
	return size%512 == SnapshotTrailerLen
}

// TrailerWriter hashes everything written to it except the last
// SnapshotTrailerLen bytes, which it holds back as the trailer: it checks a
// snapshot stream in one pass without knowing its length.
type TrailerWriter struct {
	h     hash.Hash
	tail  [SnapshotTrailerLen]byte
	held  int
	total int64
}

// NewTrailerWriter returns an empty TrailerWriter.
func NewTrailerWriter() *TrailerWriter { return &TrailerWriter{h: sha256.New()} }

// Write never fails.
func (w *TrailerWriter) Write(p []byte) (int, error) {
	n := len(p)
	w.total += int64(n)
	if excess := w.held + len(p) - SnapshotTrailerLen; excess > 0 {
		fromTail := min(w.held, excess)
		w.h.Write(w.tail[:fromTail])
		w.held = copy(w.tail[:], w.tail[fromTail:w.held])
		fromP := excess - fromTail
		w.h.Write(p[:fromP])
		p = p[fromP:]
	}
	w.held += copy(w.tail[w.held:], p)
	return n, nil
}

// ErrTrailer reports a snapshot stream whose trailer is missing or wrong.
var ErrTrailer = errors.New("snapshot sha256 trailer missing or wrong")

// Check verifies the trailer and returns the hash of the db bytes.
func (w *TrailerWriter) Check() ([SnapshotTrailerLen]byte, error) {
	var sum [SnapshotTrailerLen]byte
	copy(sum[:], w.h.Sum(nil))
	switch {
	case !HasSnapshotTrailer(w.total):
		return sum, fmt.Errorf("%w: %d bytes is not a db plus a trailer (incomplete stream?)", ErrTrailer, w.total)
	case sum != w.tail:
		return sum, fmt.Errorf("%w: db hashes to %x, trailer says %x", ErrTrailer, sum, w.tail)
	}
	return sum, nil
}
