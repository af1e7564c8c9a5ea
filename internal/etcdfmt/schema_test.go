package etcdfmt

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"testing"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

func TestRevKeyRoundTrip(t *testing.T) {
	tests := []struct {
		rev  Revision
		tomb bool
	}{
		{Revision{1, 0}, false},
		{Revision{1 << 40, 7}, true},
		{Revision{123456, 65535}, false},
	}
	for _, tc := range tests {
		k := tc.rev.AppendKey(nil, tc.tomb)
		wantLen := RevKeyLen
		if tc.tomb {
			wantLen = TombstoneKeyLen
		}
		if len(k) != wantLen {
			t.Fatalf("%v: key length %d, want %d", tc.rev, len(k), wantLen)
		}
		rev, tomb, err := ParseRevKey(k)
		if err != nil || rev != tc.rev || tomb != tc.tomb {
			t.Fatalf("%v/%v: parsed %v/%v, %v", tc.rev, tc.tomb, rev, tomb, err)
		}
	}
}

// TestRevKeyCode: codes order as the keys' bytes do, within range, and
// carry the main revision; keys out of range or malformed have none.
func TestRevKeyCode(t *testing.T) {
	type key struct {
		rev  Revision
		tomb bool
	}
	keys := []key{{Revision{1, 0}, false}, {Revision{1, 0}, true}, {Revision{1, 1}, false}, {Revision{1, 255}, false},
		{Revision{1, 256}, false}, {Revision{2, 0}, false}, {Revision{255, 3}, true}, {Revision{256, 0}, false}, {Revision{1<<39 - 1, 1<<23 - 1}, true}}
	for i, a := range keys {
		ka := a.rev.AppendKey(nil, a.tomb)
		ca, ok := RevKeyCode(ka)
		if !ok || RevOfCode(ca) != a.rev.Main {
			t.Fatalf("%v: code %x, %v", a, ca, ok)
		}
		for _, b := range keys[i+1:] {
			kb := b.rev.AppendKey(nil, b.tomb)
			cb, _ := RevKeyCode(kb)
			if bytes.Compare(ka, kb) >= 0 || ca >= cb {
				t.Fatalf("%v < %v: keys compare %d, codes %x %x", a, b, bytes.Compare(ka, kb), ca, cb)
			}
		}
	}
	for name, k := range map[string][]byte{
		"main too large": Revision{1 << 39, 0}.AppendKey(nil, false),
		"sub too large":  Revision{5, 1 << 23}.AppendKey(nil, false),
		"not a revision": []byte("consistent_index"),
	} {
		if c, ok := RevKeyCode(k); ok {
			t.Errorf("%s: code %x", name, c)
		}
	}
}

func TestParseRevKeyRejects(t *testing.T) {
	good := Revision{5, 1}.AppendKey(nil, false)
	noSep := bytes.Clone(good)
	noSep[8] = 'x'
	badMark := append(bytes.Clone(good), 'x')
	for name, k := range map[string][]byte{
		"empty": nil, "short": good[:16], "no separator": noSep, "bad mark": badMark, "long": append(bytes.Clone(good), 't', 't'),
	} {
		if _, _, err := ParseRevKey(k); !errors.Is(err, ErrBadRevKey) {
			t.Errorf("%s: err = %v, want ErrBadRevKey", name, err)
		}
	}
}

func TestParseKeyValueMatchesProtobuf(t *testing.T) {
	tests := []*mvccpb.KeyValue{
		{Key: []byte("/a"), CreateRevision: 2, ModRevision: 9, Version: 3, Value: []byte("v"), Lease: 0x694d7f1a2b3c},
		{Key: []byte("tomb")},
		{Key: bytes.Repeat([]byte("k"), 300), Value: bytes.Repeat([]byte("v"), 70000), CreateRevision: 1 << 50},
		{Key: []byte{}, ModRevision: 1},
	}
	for _, kv := range tests {
		b, err := proto.Marshal(kv)
		if err != nil {
			t.Fatal(err)
		}
		got, err := ParseKeyValue(b)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.Key, kv.Key) || got.CreateRevision != kv.CreateRevision || got.ModRevision != kv.ModRevision ||
			got.Version != kv.Version || got.Lease != kv.Lease {
			t.Errorf("parsed %+v from %+v", got, kv)
		}
	}
	if _, err := ParseKeyValue([]byte{0x0a, 0x05, 'a'}); err == nil {
		t.Error("truncated KeyValue parsed without error")
	}
	if _, err := ParseKeyValue([]byte{0x10, 0x02, 0x00}); err == nil { // field 2 with bytes wire type
		t.Error("wrong wire type parsed without error")
	}
}

func TestHasSnapshotTrailer(t *testing.T) {
	for size, want := range map[int64]bool{4096 * 4: false, 4096*4 + 32: true, 4096*4 + 31: false, 512 + 32: true} {
		if HasSnapshotTrailer(size) != want {
			t.Errorf("HasSnapshotTrailer(%d) = %v", size, !want)
		}
	}
}

func TestKeyHasher(t *testing.T) {
	h := NewKeyHasher()
	if h.ID([]byte("a")) != h.ID([]byte("a")) || h.ID([]byte("a")) == h.ID([]byte("b")) {
		t.Fatal("KeyHasher is not a function of the key")
	}
}

// TestTrailerWriter feeds a snapshot-shaped stream in pieces of every size
// around the trailer length.
func TestTrailerWriter(t *testing.T) {
	db := bytes.Repeat([]byte("0123456789abcdef"), 4096/16*3)
	sum := sha256.Sum256(db)
	good := append(append([]byte(nil), db...), sum[:]...)
	bad := append([]byte(nil), good...)
	bad[100] ^= 1
	for _, tc := range []struct {
		name   string
		stream []byte
		ok     bool
	}{{"good", good, true}, {"flipped", bad, false}, {"short", good[:len(good)-5], false}, {"no trailer", db, false}} {
		for _, piece := range []int{1, 7, 31, 32, 33, 100, 4096, len(tc.stream)} {
			w := NewTrailerWriter()
			for b := tc.stream; len(b) > 0; {
				n := min(piece, len(b))
				w.Write(b[:n])
				b = b[n:]
			}
			got, err := w.Check()
			if (err == nil) != tc.ok || tc.ok && got != sum {
				t.Errorf("%s, pieces of %d: %x %v", tc.name, piece, got, err)
			}
		}
	}
}

func TestParseV2Request(t *testing.T) {
	enc := func(method, path, val string) []byte {
		b := protowire.AppendTag(nil, 1, protowire.VarintType)
		b = protowire.AppendVarint(b, 7)
		for i, s := range []string{method, path, val} {
			b = protowire.AppendTag(b, protowire.Number(i+2), protowire.BytesType)
			b = protowire.AppendString(b, s)
		}
		return b
	}
	for _, tc := range []struct {
		name string
		data []byte
		ok   bool
	}{
		{"member attributes", enc("PUT", "/0/members/1/attributes", `{"name":"a"}`), true},
		{"cluster version", enc("PUT", "/0/version", "3.5.0"), true},
		{"not a method", enc("put", "/x", ""), false},
		{"relative path", enc("PUT", "x", ""), false},
		{"truncated", enc("PUT", "/x", "v")[:9], false},
		{"a v3 request", protowire.AppendVarint(protowire.AppendTag(nil, 1, protowire.VarintType), 3), false},
	} {
		r, ok := ParseV2Request(tc.data)
		if ok != tc.ok || ok && (r.ID != 7 || r.Method != "PUT") {
			t.Errorf("%s: %+v, %v", tc.name, r, ok)
		}
	}
}
