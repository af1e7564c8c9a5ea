package etcdfmt

import "hash/maphash"

// KeyID is a 128-bit fingerprint of a user key. Tracking fingerprints instead
// of the keys keeps per-key state small (16 bytes) whatever the key length;
// two independent 64-bit seeds make a collision vanishingly unlikely
// (about n²/2¹²⁹ for n keys).
type KeyID [2]uint64

// KeyHasher computes KeyIDs with seeds fixed for its lifetime.
type KeyHasher struct{ a, b maphash.Seed }

// NewKeyHasher returns a KeyHasher with fresh random seeds.
func NewKeyHasher() KeyHasher {
	return KeyHasher{a: maphash.MakeSeed(), b: maphash.MakeSeed()}
}

// ID64 is a 64-bit fingerprint of key, for a set that only counts keys
// (snapshot status's live keys): half the memory of an ID, at a collision
// chance of about n²/2^65 per run (1 in 10 million for 2 million keys, with
// fresh seeds every run), which would count two keys as one.
func (h KeyHasher) ID64(key []byte) uint64 { return maphash.Bytes(h.a, key) }

// ID returns the fingerprint of key.
func (h KeyHasher) ID(key []byte) KeyID {
	return KeyID{maphash.Bytes(h.a, key), maphash.Bytes(h.b, key)}
}
