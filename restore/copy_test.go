package restore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"testing/iotest"

	"github.com/etcdkit/etcdkit/internal/testetcd"
)

// TestStreamSnapshot checks the trailer hold-back and the hash over input
// sizes around the 512-byte rule and the chunk size, with readers that
// return short reads, written directly and through the page cache.
func TestStreamSnapshot(t *testing.T) {
	defer func() { useDirectIO = true }()
	sizes := []int{0, 31, 32, 33, 512, 512 + 32, 4096*3 + 32, chunkSize - 1, chunkSize + 32, 2*chunkSize + 16, 3*chunkSize + 512 + 32}
	readers := map[string]func(io.Reader) io.Reader{
		"plain":           func(r io.Reader) io.Reader { return r },
		"half":            iotest.HalfReader,
		"data-err-at-eof": iotest.DataErrReader,
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for _, size := range sizes {
		in := make([]byte, size)
		for i := range in {
			in[i] = byte(rng.Uint32())
		}
		wantTrailer := size%512 == 32
		body := in
		if wantTrailer {
			body = in[:size-32]
		}
		for name, wrap := range readers {
			useDirectIO = len(name)%2 == 0 // both write paths, over the readers

			out, err := os.Create(filepath.Join(t.TempDir(), "db"))
			if err != nil {
				t.Fatal(err)
			}
			// A stream check that gives up at once (these bytes are no
			// bolt file) sends the first copy through the page cache.
			var check checker
			if name == "half" {
				sc := newStreamCheck()
				defer sc.close()
				check = sc
			}
			var last int64
			res, err := streamSnapshot(context.Background(), wrap(bytes.NewReader(in)), "input", []*os.File{out}, true, check, func(n int64) { last = n })
			if err != nil {
				t.Fatalf("size %d %s: %v", size, name, err)
			}
			got := testetcd.Must(os.ReadFile(out.Name()))(t)
			out.Close()
			switch {
			case !bytes.Equal(got, body):
				t.Errorf("size %d %s: wrote %d bytes, want %d (content equal: %v)", size, name, len(got), len(body), bytes.Equal(got, body))
			case res.HasTrailer != wantTrailer || res.Size != int64(len(body)):
				t.Errorf("size %d %s: %+v", size, name, res)
			case wantTrailer && !bytes.Equal(res.Expected[:], in[size-32:]):
				t.Errorf("size %d %s: trailer %x", size, name, res.Expected)
			case res.Actual != sha256.Sum256(body):
				t.Errorf("size %d %s: hash of the wrong bytes", size, name)
			case len(body) > 0 && last != int64(len(body)):
				t.Errorf("size %d %s: progress ended at %d", size, name, last)
			}
		}
	}
}

// TestStreamSnapshotReadError: a failing reader fails the copy.
func TestStreamSnapshotReadError(t *testing.T) {
	out, err := os.Create(filepath.Join(t.TempDir(), "db"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	r := io.MultiReader(bytes.NewReader(make([]byte, 3*chunkSize)), iotest.ErrReader(io.ErrClosedPipe))
	if _, err := streamSnapshot(context.Background(), r, "input", []*os.File{out}, true, nil, nil); err == nil {
		t.Fatal("no error")
	}
}
