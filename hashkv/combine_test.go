package hashkv

import (
	"hash/crc32"
	"math/rand"
	"testing"
)

// crc32Combine joins CRC-32Cs as hashing the concatenation does, for
// lengths from 0 to beyond a page and random contents.
func TestCRC32Combine(t *testing.T) {
	r := rand.New(rand.NewSource(1))
	for _, n := range []int{0, 1, 2, 3, 7, 8, 15, 16, 100, 4095, 4096, 65537, 1 << 20} {
		a, b := make([]byte, r.Intn(300)), make([]byte, n)
		r.Read(a)
		r.Read(b)
		want := crc32.Update(crc32.Update(0, castagnoli, a), castagnoli, b)
		if got := crc32Combine(crc32.Update(0, castagnoli, a), crc32.Update(0, castagnoli, b), int64(n)); got != want {
			t.Errorf("len %d: %08x, want %08x", n, got, want)
		}
	}
}

// Lengths past 2^32 bytes: joining a CRC with n zero bytes equals hashing
// them.
func TestCRC32CombineLong(t *testing.T) {
	zeros := make([]byte, 1<<20)
	crc, n := crc32.Update(0, castagnoli, []byte("key")), int64(0)
	start := crc
	for _, target := range []int64{1 << 31, 1<<32 + 12345} {
		for n < target {
			k := min(int64(len(zeros)), target-n)
			crc = crc32.Update(crc, castagnoli, zeros[:k])
			n += k
		}
		// crc(A || Z) = combine(crc(A), crc(Z), len(Z)).
		if got, want := crc32Combine(start, zerosCRC(n), n), crc; got != want {
			t.Errorf("%d zero bytes: %08x, want %08x", n, got, want)
		}
	}
}

// zerosCRC is the CRC-32C of n zero bytes, hashed.
func zerosCRC(n int64) uint32 {
	zeros := make([]byte, 1<<20)
	var crc uint32
	for n > 0 {
		k := min(int64(len(zeros)), n)
		crc = crc32.Update(crc, castagnoli, zeros[:k])
		n -= k
	}
	return crc
}
