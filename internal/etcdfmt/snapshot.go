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

// ErrTrailer reports a snapshot whose sha256 trailer is missing or wrong;
// every such error is a *TrailerError.
var ErrTrailer = errors.New("snapshot sha256 trailer missing or wrong")

// TrailerError is the verdict of CheckTrailer against a snapshot: its
// trailer is missing (Size is not a db plus 32 bytes), or the db's bytes
// hash to DB where the trailer says Trailer.
type TrailerError struct {
	Size        int64 // of the whole snapshot, trailer included
	Missing     bool
	DB, Trailer [SnapshotTrailerLen]byte
}

func (e *TrailerError) Error() string {
	if e.Missing {
		return fmt.Sprintf("%d bytes is not a db plus a 32-byte sha256 trailer: no trailer, or an incomplete snapshot", e.Size)
	}
	return fmt.Sprintf("snapshot sha256 mismatch: expected %x, got %x (what the trailer says, and what the db's bytes hash to): the file changed after etcd wrote it, or is incomplete", e.Trailer, e.DB)
}

// Is makes every TrailerError an ErrTrailer.
func (e *TrailerError) Is(target error) bool { return target == ErrTrailer }

// CheckTrailer is the one verdict on a snapshot's trailer: size is the
// whole snapshot's, db the sha256 of all but its last 32 bytes and trailer
// those bytes. It returns nil or a *TrailerError.
func CheckTrailer(size int64, db, trailer [SnapshotTrailerLen]byte) error {
	switch {
	case !HasSnapshotTrailer(size):
		return &TrailerError{Size: size, Missing: true}
	case db != trailer:
		return &TrailerError{Size: size, DB: db, Trailer: trailer}
	}
	return nil
}

// Check verifies the trailer (CheckTrailer) and returns the hash of the db
// bytes.
// FileSum is the sha256 of everything written, trailer included (the
// whole file's), from the same pass: the db's hash state goes on with the
// held-back bytes.
func (w *TrailerWriter) FileSum() ([sha256.Size]byte, error) {
	var sum [sha256.Size]byte
	c, ok := w.h.(hash.Cloner)
	if !ok {
		return sum, fmt.Errorf("sha256 cannot be cloned")
	}
	h, err := c.Clone()
	if err != nil {
		return sum, err
	}
	h.Write(w.tail[:w.held])
	copy(sum[:], h.Sum(nil))
	return sum, nil
}

func (w *TrailerWriter) Check() ([SnapshotTrailerLen]byte, error) {
	var sum [SnapshotTrailerLen]byte
	copy(sum[:], w.h.Sum(nil))
	return sum, CheckTrailer(w.total, sum, w.tail)
}
