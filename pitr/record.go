// Package pitr is etcdkit's point-in-time recovery: a continuous log of
// every revision the cluster writes, taken from a watch of the whole
// keyspace and stored in the backup repository beside the full backups
// (package backup keeps its segments), and the replay of that log into a
// restored db, offline, so that the result holds the exact key-bucket
// entries the cluster wrote: the same HashKV at the chosen revision.
//
// A segment's raw content is a sequence of records:
//
//	header  "etcdkit-revlog-1\n"
//	'T' varint(unix nanoseconds)    the receive time of the events after it
//	'L' varint(lease ID) varint(TTL) a lease that puts after it attach to
//	'E' uvarint(n) n bytes           one watch event (mvccpb.Event)
//
// A revision's events are never split across segments.
package pitr

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/etcdkit/etcdkit/internal/etcdfmt"
)

const header = "etcdkit-revlog-1\n"

// Record kinds.
const (
	kindTime  = 'T'
	kindLease = 'L'
	kindEvent = 'E'
)

// maxEvent bounds one event's encoding: etcd's largest request is far
// below it (--max-request-bytes defaults to 1.5 MiB), and a damaged
// length must not make a reader allocate gigabytes.
const maxEvent = 256 << 20

// ErrFormat: a segment's content is not a revision log.
var ErrFormat = errors.New("not a revision log")

// encoder appends records to a buffer.
type encoder struct {
	buf []byte
}

func newEncoder() *encoder { return &encoder{buf: []byte(header)} }

func (e *encoder) time(t time.Time) {
	e.buf = append(e.buf, kindTime)
	e.buf = binary.AppendVarint(e.buf, t.UnixNano())
}

func (e *encoder) lease(id, ttl int64) {
	e.buf = append(e.buf, kindLease)
	e.buf = binary.AppendVarint(e.buf, id)
	e.buf = binary.AppendVarint(e.buf, ttl)
}

func (e *encoder) event(ev *mvccpb.Event) error {
	n := proto.Size(ev)
	mark := len(e.buf)
	e.buf = append(e.buf, kindEvent)
	e.buf = binary.AppendUvarint(e.buf, uint64(n))
	out, err := marshal.MarshalAppend(e.buf, ev)
	if err != nil || len(out)-len(e.buf) != n {
		e.buf = e.buf[:mark]
		return fmt.Errorf("encode event at revision %d: %w", ev.GetKv().GetModRevision(), err)
	}
	e.buf = out
	return nil
}

// marshal encodes as etcd's server does (proto.Marshal): the stored
// KeyValue bytes a replay writes must be the server's own.
var marshal = proto.MarshalOptions{}

// Record is one decoded record.
type Record struct {
	Kind    byte
	Time    time.Time // kindTime
	LeaseID int64     // kindLease
	TTL     int64     // kindLease: the granted TTL in seconds; 0 unknown
	Event   Event     // kindEvent; its bytes are valid until the next record
}

// Event is one logged watch event, read in place from its encoding
// (mvccpb.Event: type 1, kv 2): the KeyValue's own bytes are what the
// server stored for a put, so a replay copies them, never re-encodes.
type Event struct {
	Delete bool
	KV     []byte // the marshalled mvccpb.KeyValue
	etcdfmt.KeyValue
}

// parseEvent reads an encoded mvccpb.Event.
func parseEvent(b []byte, e *Event) error {
	*e = Event{}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		switch {
		case num == 1 && typ == protowire.VarintType:
			v, m := protowire.ConsumeVarint(b)
			if m < 0 {
				return protowire.ParseError(m)
			}
			if v > 1 {
				return fmt.Errorf("event type %d", v)
			}
			e.Delete, n = v == 1, m
		case num == 2 && typ == protowire.BytesType:
			v, m := protowire.ConsumeBytes(b)
			if m < 0 {
				return protowire.ParseError(m)
			}
			e.KV, n = v, m
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return protowire.ParseError(n)
			}
		}
		b = b[n:]
	}
	if e.KV == nil {
		return errors.New("an event without a key-value")
	}
	var err error
	e.KeyValue, err = etcdfmt.ParseKeyValue(e.KV)
	return err
}

// decoder reads records.
type decoder struct {
	r    *bufio.Reader
	name string
	buf  []byte
}

func newDecoder(r io.Reader, name string) (*decoder, error) {
	d := &decoder{r: bufio.NewReaderSize(r, 1<<20), name: name}
	h := make([]byte, len(header))
	if _, err := io.ReadFull(d.r, h); err != nil || string(h) != header {
		if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		return nil, fmt.Errorf("%s: %w: no revision log header", name, ErrFormat)
	}
	return d, nil
}

// next returns the next record, or io.EOF after the last.
func (d *decoder) next(rec *Record) error {
	kind, err := d.r.ReadByte()
	if err != nil {
		return err // io.EOF at a record boundary: the end
	}
	bad := func(what string, err error) error {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("%s: %w", d.name, err)
		}
		return fmt.Errorf("%s: %w: %s: %v", d.name, ErrFormat, what, err)
	}
	rec.Kind = kind
	switch kind {
	case kindTime:
		ns, err := binary.ReadVarint(d.r)
		if err != nil {
			return bad("time record", err)
		}
		rec.Time = time.Unix(0, ns).UTC()
	case kindLease:
		if rec.LeaseID, err = binary.ReadVarint(d.r); err != nil {
			return bad("lease record", err)
		}
		if rec.TTL, err = binary.ReadVarint(d.r); err != nil {
			return bad("lease record", err)
		}
	case kindEvent:
		n, err := binary.ReadUvarint(d.r)
		if err != nil {
			return bad("event length", err)
		}
		if n > maxEvent {
			return bad(fmt.Sprintf("event of %d bytes", n), nil)
		}
		if cap(d.buf) < int(n) {
			d.buf = make([]byte, n)
		}
		d.buf = d.buf[:n]
		if _, err := io.ReadFull(d.r, d.buf); err != nil {
			return bad("event", err)
		}
		if err := parseEvent(d.buf, &rec.Event); err != nil {
			return fmt.Errorf("%s: %w: event: %v", d.name, ErrFormat, err)
		}
	default:
		return bad(fmt.Sprintf("record kind %q", kind), nil)
	}
	return nil
}
