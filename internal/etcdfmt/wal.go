package etcdfmt

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"

	"go.etcd.io/etcd/server/v3/storage/wal/walpb"
	"google.golang.org/protobuf/proto"
)

// WAL record types (server/storage/wal).
const (
	WALMetadata = 1 // etcdserverpb.Metadata: node and cluster ID
	WALEntry    = 2 // raftpb.Entry
	WALState    = 3 // raftpb.HardState
	WALCRC      = 4 // the running CRC carried into a new file
	WALSnapshot = 5 // walpb.Snapshot: a .snap the log may start from
)

const (
	walFrameBytes = 8   // the little-endian length word before each record
	walSector     = 512 // the smallest unit a torn write leaves zeroed
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// WALChecksum extends a WAL's running CRC-32C (Castagnoli) over data: each
// record's crc field is the running value after its data.
func WALChecksum(prev uint32, data []byte) uint32 { return crc32.Update(prev, crcTable, data) }

// ParseWALName decodes a WAL file name, "%016x-%016x.wal": the file's
// sequence number and the raft index of the first entry it may hold.
func ParseWALName(name string) (seq, index uint64, ok bool) {
	var tail string
	n, err := fmt.Sscanf(name, "%016x-%016x%s", &seq, &index, &tail)
	return seq, index, err == nil && n == 3 && tail == ".wal" && len(name) == 37
}

// ParseSnapName decodes a .snap file name, "%016x-%016x.snap": the raft
// term and index of the snapshot.
func ParseSnapName(name string) (term, index uint64, ok bool) {
	var tail string
	n, err := fmt.Sscanf(name, "%016x-%016x%s", &term, &index, &tail)
	return term, index, err == nil && n == 3 && tail == ".snap" && len(name) == 38
}

// WALRecord is one decoded record of a WAL file and where it was.
type WALRecord struct {
	Offset int64 // of its length word
	Size   int64 // length word, record and padding
	Record *walpb.Record
	raw    []byte // record and padding, for the torn-write test
}

// Errors of WALReader.Next. Both carry the offset in the message.
var (
	// ErrWALShort: a record runs past the end of the file.
	ErrWALShort = errors.New("record runs past the end of the file")
	// ErrWALBadRecord: a record's bytes do not decode.
	ErrWALBadRecord = errors.New("record does not decode")
)

// WALReader reads the records of one WAL file in order, with bounded
// memory (one record at a time).
type WALReader struct {
	r    *bufio.Reader
	off  int64
	size int64
}

// NewWALReader reads a WAL file of size bytes from r.
func NewWALReader(r io.Reader, size int64) *WALReader {
	return &WALReader{r: bufio.NewReaderSize(r, 1<<20), size: size}
}

// Offset is where the next record starts: after a failed Next, the end of
// the last good record.
func (w *WALReader) Offset() int64 { return w.off }

// Next returns the next record, or io.EOF at the end of the file's data (its
// end, or the zero length word of the preallocated tail).
func (w *WALReader) Next() (WALRecord, error) {
	var lw [walFrameBytes]byte
	if _, err := io.ReadFull(w.r, lw[:]); err == io.EOF {
		return WALRecord{}, io.EOF
	} else if err != nil {
		return WALRecord{}, fmt.Errorf("%w: length word at offset %d", ErrWALShort, w.off)
	}
	l := int64(binary.LittleEndian.Uint64(lw[:]))
	if l == 0 {
		return WALRecord{}, io.EOF
	}
	recBytes := int64(uint64(l) &^ (uint64(0xff) << 56))
	var padBytes int64
	if l < 0 {
		padBytes = int64((uint64(l) >> 56) & 0x7)
	}
	if w.off+walFrameBytes+recBytes+padBytes > w.size {
		return WALRecord{}, fmt.Errorf("%w: record at offset %d claims %d bytes, %d remain", ErrWALShort, w.off, recBytes+padBytes, w.size-w.off-walFrameBytes)
	}
	raw := make([]byte, recBytes+padBytes)
	if _, err := io.ReadFull(w.r, raw); err != nil {
		return WALRecord{}, fmt.Errorf("%w: record at offset %d: %w", ErrWALShort, w.off, err)
	}
	rec := WALRecord{Offset: w.off, Size: walFrameBytes + recBytes + padBytes, Record: &walpb.Record{}, raw: raw}
	if err := proto.Unmarshal(raw[:recBytes], rec.Record); err != nil {
		return rec, fmt.Errorf("%w: record at offset %d: %w", ErrWALBadRecord, w.off, err)
	}
	w.off += rec.Size
	return rec, nil
}

// Torn reports whether a record looks like a torn write, as etcd decides
// it: some 512-byte sector of it is all zeros, because the crash came
// before that sector reached the disk.
func (r WALRecord) Torn() bool {
	fileOff := r.Offset + walFrameBytes
	data := r.raw
	for len(data) > 0 {
		n := int(walSector - fileOff%walSector)
		n = min(n, len(data))
		zero := true
		for _, b := range data[:n] {
			if b != 0 {
				zero = false
				break
			}
		}
		if zero {
			return true
		}
		data, fileOff = data[n:], fileOff+int64(n)
	}
	return false
}
