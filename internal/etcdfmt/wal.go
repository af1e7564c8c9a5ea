package etcdfmt

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/server/v3/storage/wal/walpb"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/encoding/protowire"
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

// WALFile is a WAL segment of a directory, by its name.
type WALFile struct {
	Name       string
	Seq, Index uint64
}

// ListWAL lists the WAL segments of dir in sequence order. Names that are
// not segment names (the preallocated 0.tmp, 1.tmp) are left out.
func ListWAL(dir string) ([]WALFile, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var files []WALFile
	for _, e := range entries {
		if seq, index, ok := ParseWALName(e.Name()); ok {
			files = append(files, WALFile{e.Name(), seq, index})
		}
	}
	sort.Slice(files, func(i, j int) bool { return files[i].Seq < files[j].Seq })
	return files, nil
}

// ErrWALCorrupt reports a WAL whose records cannot be trusted: a CRC that
// does not match, a hole in the segment sequence, or a damaged record
// anywhere but the torn tail etcd itself would cut.
var ErrWALCorrupt = errors.New("WAL is damaged")

// ReadWAL reads every record of the WAL in dir, segment by segment,
// following the CRC chain, and passes each valid data record (not the CRC
// records) to fn with its segment. A torn write at the end of the last
// segment ends the log, as etcd decides when it starts; any other damage is
// ErrWALCorrupt naming the file and offset. Memory is one record.
func ReadWAL(dir string, fn func(f WALFile, rec WALRecord) error) error {
	files, err := ListWAL(dir)
	if err != nil {
		return err
	}
	if len(files) == 0 {
		return fmt.Errorf("%w: %s: no WAL files", ErrWALCorrupt, dir)
	}
	var crc uint32
	for i, f := range files {
		if i > 0 && f.Seq != files[i-1].Seq+1 {
			return fmt.Errorf("%w: %s: segments %d to %d are missing", ErrWALCorrupt, dir, files[i-1].Seq+1, f.Seq-1)
		}
		if err := readWALFile(filepath.Join(dir, f.Name), i == len(files)-1, &crc, func(rec WALRecord) error { return fn(f, rec) }); err != nil {
			return err
		}
	}
	return nil
}

func readWALFile(path string, last bool, crc *uint32, fn func(WALRecord) error) error {
	fh, err := os.Open(path)
	if err != nil {
		return err
	}
	defer fh.Close()
	fi, err := fh.Stat()
	if err != nil {
		return err
	}
	rd := NewWALReader(fh, fi.Size())
	for {
		rec, err := rd.Next()
		switch {
		case err == io.EOF:
			return nil
		case err != nil && last && (errors.Is(err, ErrWALShort) || rec.Record != nil && rec.Torn()):
			return nil // a torn tail: etcd truncates the log here
		case err != nil:
			return fmt.Errorf("%w: %s: %w", ErrWALCorrupt, path, err)
		}
		typ := rec.Record.GetType()
		if typ == WALCRC {
			if *crc != 0 && rec.Record.GetCrc() != *crc {
				return fmt.Errorf("%w: %s: offset %d: CRC chain broken", ErrWALCorrupt, path, rec.Offset)
			}
			*crc = rec.Record.GetCrc()
			continue
		}
		*crc = WALChecksum(*crc, rec.Record.GetData())
		if rec.Record.GetCrc() != *crc {
			if last && rec.Torn() {
				return nil
			}
			return fmt.Errorf("%w: %s: offset %d: CRC mismatch in a type %d record", ErrWALCorrupt, path, rec.Offset, typ)
		}
		if err := fn(rec); err != nil {
			return err
		}
	}
}

// V2Request is the part of a v2 store request (etcd 3.4's pb.Request, still
// in 3.5's logs: a member publishes its name and client URLs with one) that
// an inspection shows. etcd 3.7's API no longer has the type.
type V2Request struct {
	ID     uint64 `json:"id"`
	Method string `json:"method"`
	Path   string `json:"path"`
	Val    string `json:"val,omitempty"`
}

// ParseV2Request decodes a WAL entry's data as a v2 request: field 1 ID,
// 2 Method, 3 Path, 4 Val. It reports false unless the method is one of the
// v2 store's and the path absolute, which an InternalRaftRequest of 3.5 and
// later never looks like (it has no field 2).
func ParseV2Request(b []byte) (V2Request, bool) {
	var r V2Request
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return r, false
		}
		b = b[n:]
		switch {
		case num == 1 && typ == protowire.VarintType:
			v, m := protowire.ConsumeVarint(b)
			if m < 0 {
				return r, false
			}
			r.ID, n = v, m
		case num >= 2 && num <= 4 && typ == protowire.BytesType:
			v, m := protowire.ConsumeBytes(b)
			if m < 0 {
				return r, false
			}
			switch num {
			case 2:
				r.Method = string(v)
			case 3:
				r.Path = string(v)
			case 4:
				r.Val = string(v)
			}
			n = m
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return r, false
			}
		}
		b = b[n:]
	}
	switch r.Method {
	case "PUT", "POST", "DELETE", "QGET", "GET", "SYNC":
		return r, strings.HasPrefix(r.Path, "/")
	}
	return r, false
}

// WALHead is what a WAL says of its member: the cluster and member IDs of
// its metadata and the commit index of its last HardState.
type WALHead struct {
	ClusterID, NodeID uint64
	Commit            uint64
}

// ReadWALHead reads the WAL in dir (as ReadWAL) for its WALHead.
func ReadWALHead(dir string) (WALHead, error) {
	var h WALHead
	err := ReadWAL(dir, func(_ WALFile, rec WALRecord) error {
		switch rec.Record.GetType() {
		case WALMetadata:
			var md etcdserverpb.Metadata
			if err := proto.Unmarshal(rec.Record.GetData(), &md); err != nil {
				return fmt.Errorf("%w: %s: metadata at offset %d: %w", ErrWALCorrupt, dir, rec.Offset, err)
			}
			h.ClusterID, h.NodeID = md.GetClusterID(), md.GetNodeID()
		case WALState:
			var hs raftpb.HardState
			if err := proto.Unmarshal(rec.Record.GetData(), &hs); err != nil {
				return fmt.Errorf("%w: %s: HardState at offset %d: %w", ErrWALCorrupt, dir, rec.Offset, err)
			}
			h.Commit = hs.GetCommit()
		}
		return nil
	})
	return h, err
}
