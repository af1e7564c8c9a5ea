package pitr

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
)

// encoded is a small valid segment: a time, a lease, a put and a delete.
func encoded(t testing.TB) []byte {
	e := newEncoder()
	e.time(time.Unix(1700000000, 0))
	e.lease(42, 60)
	for _, ev := range []*mvccpb.Event{
		{Type: mvccpb.Event_PUT, Kv: &mvccpb.KeyValue{Key: []byte("a"), Value: []byte("v"), CreateRevision: 2, ModRevision: 2, Version: 1, Lease: 42}},
		{Type: mvccpb.Event_DELETE, Kv: &mvccpb.KeyValue{Key: []byte("a"), ModRevision: 3}},
	} {
		if err := e.event(ev); err != nil {
			t.Fatal(err)
		}
	}
	return e.buf
}

// readAll decodes every record of b.
func readAll(b []byte) ([]Record, error) {
	d, err := newDecoder(bytes.NewReader(b), "seg")
	if err != nil {
		return nil, err
	}
	var out []Record
	for {
		var r Record
		if err := d.next(&r); err == io.EOF {
			return out, nil
		} else if err != nil {
			return out, err
		}
		r.Event.KV = bytes.Clone(r.Event.KV)
		out = append(out, r)
	}
}

// TestRecordsRoundTrip reads back what the encoder wrote, and refuses the
// worst inputs with ErrFormat: truncated anywhere, a huge length, an
// unknown kind, an event that is no event.
func TestRecordsRoundTrip(t *testing.T) {
	b := encoded(t)
	recs, err := readAll(b)
	if err != nil || len(recs) != 4 {
		t.Fatalf("%d records, %v", len(recs), err)
	}
	if recs[1].LeaseID != 42 || recs[1].TTL != 60 || recs[2].Event.ModRevision != 2 || recs[2].Event.Lease != 42 || recs[2].Event.Delete ||
		!recs[3].Event.Delete || string(recs[3].Event.Key) != "a" || !recs[0].Time.Equal(time.Unix(1700000000, 0)) {
		t.Fatalf("records %+v", recs)
	}
	for cut := len(header) + 1; cut < len(b); cut++ {
		if _, err := readAll(b[:cut]); err != nil && !errors.Is(err, ErrFormat) {
			t.Fatalf("cut at %d: %v, want ErrFormat or a clean end", cut, err)
		}
	}
	for name, bad := range map[string][]byte{
		"no header":    []byte("hello"),
		"huge length":  append([]byte(header), 'E', 0xff, 0xff, 0xff, 0xff, 0x0f),
		"unknown kind": append([]byte(header), 'Z'),
		"not an event": append([]byte(header), 'E', 2, 0x08, 0x07),
	} {
		if _, err := readAll(bad); !errors.Is(err, ErrFormat) {
			t.Errorf("%s: %v, want ErrFormat", name, err)
		}
	}
}

// FuzzRecords: any bytes decode to records or end in ErrFormat (or a
// clean end), never a panic or an allocation past maxEvent.
func FuzzRecords(f *testing.F) {
	f.Add(encoded(f))
	f.Add([]byte(header))
	f.Add(append([]byte(header), 'E', 0xff, 0xff, 0xff, 0x7f))
	f.Fuzz(func(t *testing.T, b []byte) {
		recs, err := readAll(b)
		if err != nil && !errors.Is(err, ErrFormat) {
			t.Fatalf("unexpected error class: %v", err)
		}
		for _, r := range recs {
			if r.Kind == kindEvent && r.Event.KV == nil {
				t.Fatal("an event record without its key-value")
			}
		}
	})
}
