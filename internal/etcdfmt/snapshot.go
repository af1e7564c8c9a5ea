package etcdfmt

import "crypto/sha256"

// SnapshotTrailerLen is the size of the sha256 digest that the Maintenance
// Snapshot RPC appends after the bolt file.
const SnapshotTrailerLen = sha256.Size

// HasSnapshotTrailer reports whether a snapshot file of the given size carries
// the sha256 trailer: a bolt file is a whole number of pages (a multiple of
// 512 bytes), so a remainder of exactly 32 bytes is the digest.
func HasSnapshotTrailer(size int64) bool {
	return size%512 == SnapshotTrailerLen
}
