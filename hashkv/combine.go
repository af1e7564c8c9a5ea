package hashkv

// crc32Combine returns the CRC-32C of A followed by B from crc1 (A's), crc2
// (B's) and B's length, as zlib's crc32_combine does for its polynomial:
// crc1 times x^(8·len2) modulo the (reflected) Castagnoli polynomial, plus
// crc2. It lets entries be hashed apart and joined in the order the server
// hashes them, in O(log len2).
func crc32Combine(crc1, crc2 uint32, len2 int64) uint32 {
	if len2 <= 0 {
		return crc1 ^ crc2
	}
	return multModP(x2nModP(len2, 3), crc1) ^ crc2
}

const castagnoliPoly = 0x82F63B78 // reflected

// x2nTable[k] is x^(2^k) modulo the polynomial, for every k a length in
// bits can need (zlib's table of 32 relies on a cycle of CRC-32's
// polynomial that Castagnoli's does not share).
var x2nTable = func() (t [66]uint32) {
	p := uint32(1) << 30 // x^1
	t[0] = p
	for k := 1; k < len(t); k++ {
		p = multModP(p, p)
		t[k] = p
	}
	return t
}()

// multModP multiplies a and b modulo the polynomial (bit 31 is x^0).
func multModP(a, b uint32) uint32 {
	m, p := uint32(1)<<31, uint32(0)
	for {
		if a&m != 0 {
			p ^= b
			if a&(m-1) == 0 {
				break
			}
		}
		m >>= 1
		if b&1 != 0 {
			b = b>>1 ^ castagnoliPoly
		} else {
			b >>= 1
		}
	}
	return p
}

// x2nModP is x^(n·2^k) modulo the polynomial.
func x2nModP(n int64, k uint) uint32 {
	p := uint32(1) << 31 // x^0
	for n != 0 {
		if n&1 != 0 {
			p = multModP(x2nTable[k], p)
		}
		n >>= 1
		k++
	}
	return p
}
