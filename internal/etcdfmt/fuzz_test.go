package etcdfmt

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"testing"
)

// FuzzWALReader: any bytes read as a WAL segment end in io.EOF or one of
// the reader's two errors, never a panic; records are contiguous, inside
// the file, and each costs at least its 8-byte length word. Seed: the used
// part of a real etcd WAL segment (testdata/fuzz, from tools/fuzzseeds).
func FuzzWALReader(f *testing.F) {
	f.Add([]byte{})
	f.Add(make([]byte, 64))
	f.Fuzz(func(t *testing.T, b []byte) {
		rd := NewWALReader(bytes.NewReader(b), int64(len(b)))
		var end int64
		for n := 0; ; n++ {
			if n > len(b)/walFrameBytes {
				t.Fatalf("%d records from %d bytes", n, len(b))
			}
			rec, err := rd.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				if !errors.Is(err, ErrWALShort) && !errors.Is(err, ErrWALBadRecord) {
					t.Fatalf("unexpected error class: %v", err)
				}
				if rd.Offset() != end {
					t.Fatalf("offset after a failure %d, want the end of the last good record %d", rd.Offset(), end)
				}
				rec.Torn() // decided on whatever was read, without a panic
				break
			}
			if rec.Offset != end || rec.Size < walFrameBytes || rec.Offset+rec.Size > int64(len(b)) {
				t.Fatalf("record at %d of %d bytes after %d, file %d bytes", rec.Offset, rec.Size, end, len(b))
			}
			end = rec.Offset + rec.Size
			WALChecksum(0, rec.Record.GetData())
		}
	})
}

// FuzzTrailerWriter: however a stream is cut into writes, TrailerWriter
// hashes exactly all but its last 32 bytes and accepts the trailer exactly
// when it is their sha256 after a whole number of 512-byte units. Seed: a
// real etcd snapshot (testdata/fuzz, from tools/fuzzseeds).
func FuzzTrailerWriter(f *testing.F) {
	db := make([]byte, 4096)
	sum := sha256.Sum256(db)
	f.Add(append(db, sum[:]...), uint16(100), uint16(4000))
	f.Add([]byte("short"), uint16(1), uint16(2))
	f.Fuzz(func(t *testing.T, b []byte, cut1, cut2 uint16) {
		w := NewTrailerWriter()
		c1 := min(int(cut1), len(b))
		c2 := min(c1+int(cut2), len(b))
		for _, part := range [][]byte{b[:c1], b[c1:c2], b[c2:]} {
			if n, err := w.Write(part); n != len(part) || err != nil {
				t.Fatalf("Write: %d, %v", n, err)
			}
		}
		got, err := w.Check()
		var body []byte
		if len(b) >= SnapshotTrailerLen {
			body = b[:len(b)-SnapshotTrailerLen]
		}
		want := sha256.Sum256(body)
		if len(b) >= SnapshotTrailerLen && got != want {
			t.Fatalf("hash %x, want %x", got, want)
		}
		ok := HasSnapshotTrailer(int64(len(b))) && bytes.Equal(b[len(body):], want[:])
		if (err == nil) != ok || err != nil && !errors.Is(err, ErrTrailer) {
			t.Fatalf("Check: %v, trailer valid: %v", err, ok)
		}
	})
}
