package verify

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/server/v3/etcdserver/api/snap"
	"go.etcd.io/etcd/server/v3/storage/datadir"
	"go.etcd.io/etcd/server/v3/storage/wal/walpb"
	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/etcdkit/etcdkit/internal/etcdfmt"
)

// DataDir verifies a member's data dir: the db checks of Snapshot on
// member/snap/db, the WAL in walDir (default member/wal), the .snap files,
// and how they agree with each other.
func DataDir(dir, walDir string, opts Options) (*Report, error) {
	start := time.Now()
	member := datadir.ToMemberDir(dir)
	if fi, err := os.Stat(member); err != nil || !fi.IsDir() {
		if err == nil {
			err = errors.New("not a directory")
		}
		return nil, fmt.Errorf("%s: not an etcd data dir (no member directory): %w", dir, err)
	}
	if walDir == "" {
		walDir = datadir.ToWalDir(dir)
	}
	snapDir := datadir.ToSnapDir(dir)
	r := &Report{Target: dir}

	// The WAL and .snap files are read while the db is checked.
	logs := &Report{}
	var wf walFacts
	var snaps []snapFile
	done := make(chan struct{})
	go func() {
		defer close(done)
		wf = logs.checkWAL(walDir)
		snaps = logs.checkSnaps(snapDir)
	}()
	facts, err := r.checkDB(filepath.Join(snapDir, "db"), opts)
	<-done
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(snapDir, "db"), err)
	}
	r.Checks = append(r.Checks, logs.Checks...)
	r.Problems = append(r.Problems, logs.Problems...)
	r.checkAgreement(dir, facts, wf, snaps)
	r.Took = time.Since(start)
	return r, nil
}

// walFacts is what the WAL says.
type walFacts struct {
	ok          bool // read to the end (a torn tail allowed)
	nodeID      uint64
	snapshots   []*walpb.Snapshot
	commit      uint64
	confChanges []confChange
}

type confChange struct {
	index  uint64
	typ    raftpb.ConfChangeType
	nodeID uint64
}

type walFile struct {
	name       string
	seq, index uint64
}

// checkWAL checks the WAL's file names and sequence, then reads every
// record, following the CRC chain across files.
func (r *Report) checkWAL(walDir string) walFacts {
	var wf walFacts
	names := r.check("wal files", walDir)
	entries, err := os.ReadDir(walDir)
	if err != nil {
		names.add(-1, "", "cannot read the WAL directory: %v", err)
		names.done("not checked")
		return wf
	}
	var files []walFile
	for _, e := range entries {
		n := e.Name()
		if !strings.HasSuffix(n, ".wal") {
			continue // 0.tmp, 1.tmp: preallocated next segments
		}
		seq, index, ok := etcdfmt.ParseWALName(n)
		if !ok {
			names.add(-1, n, "not a WAL file name (want %%016x-%%016x.wal)")
			continue
		}
		files = append(files, walFile{n, seq, index})
	}
	sort.Slice(files, func(i, j int) bool { return files[i].seq < files[j].seq })
	gapBefore := map[int]bool{}
	for i := 1; i < len(files); i++ {
		a, b := files[i-1], files[i]
		if b.seq != a.seq+1 {
			names.add(-1, b.name, "segments %d to %d are missing between %s and %s: the log has a hole", a.seq+1, b.seq-1, a.name, b.name)
			gapBefore[i] = true
		}
		if b.index < a.index {
			names.add(-1, b.name, "first index %d is below the previous file's %d", b.index, a.index)
		}
	}
	if len(files) == 0 {
		names.add(-1, "", "no WAL files")
	}
	names.done("%d segments", len(files))

	recs := r.check("wal records", walDir)
	var crc uint32
	var metadata []byte
	var lastIndex uint64
	wf.ok = len(files) > 0
	total := 0
	for i, f := range files {
		if gapBefore[i] {
			crc = 0 // the chain cannot be followed over a hole
		}
		n, ok := r.readWALFile(recs, walDir, f, i == len(files)-1, i == 0, &crc, &metadata, &lastIndex, &wf)
		total += n
		wf.ok = wf.ok && ok
	}
	recs.done("%d records, CRC-32C chain across files", total)
	return wf
}

// readWALFile reads one segment. It returns the records read and whether
// the file was read to its end without corruption.
func (r *Report) readWALFile(c *checker, walDir string, f walFile, last, first bool, crc *uint32, metadata *[]byte, lastIndex *uint64, wf *walFacts) (int, bool) {
	path := filepath.Join(walDir, f.name)
	c.file = path
	fh, err := os.Open(path)
	if err != nil {
		c.add(-1, "", "%v", err)
		return 0, false
	}
	defer fh.Close()
	fi, err := fh.Stat()
	if err != nil {
		c.add(-1, "", "%v", err)
		return 0, false
	}
	rd := etcdfmt.NewWALReader(fh, fi.Size())
	torn := func(off int64, what string) {
		// etcd's rule: only the last file may end in a torn write.
		c.severity = Repairable
		c.add(off, "", "torn write at the end of the WAL (%s): a crash during a write; etcd truncates the log here when it starts, losing only the unsynced tail", what)
		c.severity = Corrupt
	}
	n := 0
	for {
		rec, err := rd.Next()
		if err == io.EOF {
			return n, true
		}
		if err != nil {
			if last && (errors.Is(err, etcdfmt.ErrWALShort) || rec.Record != nil && rec.Torn()) {
				torn(rd.Offset(), err.Error())
				return n, true
			}
			c.add(rd.Offset(), "", "%v", err)
			return n, false
		}
		n++
		typ := rec.Record.GetType()
		if n == 1 && typ != etcdfmt.WALCRC {
			c.add(rec.Offset, "", "segment does not start with a CRC record (type %d)", typ)
		}
		if typ == etcdfmt.WALCRC {
			if *crc != 0 && rec.Record.GetCrc() != *crc {
				c.add(rec.Offset, "", "CRC chain broken: the segment carries %08x but the previous one ended at %08x", rec.Record.GetCrc(), *crc)
			}
			*crc = rec.Record.GetCrc()
			continue
		}
		*crc = etcdfmt.WALChecksum(*crc, rec.Record.GetData())
		if rec.Record.GetCrc() != *crc {
			if last && rec.Torn() {
				torn(rec.Offset, "CRC mismatch in a partly zeroed record")
				return n, true
			}
			c.add(rec.Offset, "", "CRC mismatch in a type %d record: its bytes changed after etcd wrote them", typ)
			return n, false
		}
		if err := wf.apply(typ, rec.Record.GetData(), metadata, lastIndex); err != nil {
			c.add(rec.Offset, "", "%v", err)
		}
	}
}

// apply records what one valid WAL record says.
func (wf *walFacts) apply(typ int64, data []byte, metadata *[]byte, lastIndex *uint64) error {
	switch typ {
	case etcdfmt.WALMetadata:
		if *metadata != nil && !bytes.Equal(*metadata, data) {
			return errors.New("metadata (member and cluster ID) differs from the first segment's")
		}
		*metadata = append([]byte(nil), data...)
		var md etcdserverpb.Metadata
		if err := proto.Unmarshal(data, &md); err != nil {
			return fmt.Errorf("metadata does not decode: %v", err)
		}
		wf.nodeID = md.GetNodeID()
	case etcdfmt.WALState:
		var hs raftpb.HardState
		if err := proto.Unmarshal(data, &hs); err != nil {
			return fmt.Errorf("HardState does not decode: %v", err)
		}
		wf.commit = hs.GetCommit()
	case etcdfmt.WALSnapshot:
		var s walpb.Snapshot
		if err := proto.Unmarshal(data, &s); err != nil {
			return fmt.Errorf("snapshot record does not decode: %v", err)
		}
		wf.snapshots = append(wf.snapshots, &s)
	case etcdfmt.WALEntry:
		var e raftpb.Entry
		if err := proto.Unmarshal(data, &e); err != nil {
			return fmt.Errorf("entry does not decode: %v", err)
		}
		idx := e.GetIndex()
		if idx <= *lastIndex { // a new leader overwrote the log's tail
			k := sort.Search(len(wf.confChanges), func(i int) bool { return wf.confChanges[i].index >= idx })
			wf.confChanges = wf.confChanges[:k]
		}
		*lastIndex = idx
		switch e.GetType() {
		case raftpb.EntryConfChange:
			var cc raftpb.ConfChange
			if err := proto.Unmarshal(e.GetData(), &cc); err != nil {
				return fmt.Errorf("entry %d: ConfChange does not decode: %v", idx, err)
			}
			wf.confChanges = append(wf.confChanges, confChange{idx, cc.GetType(), cc.GetNodeId()})
		case raftpb.EntryConfChangeV2:
			var cc raftpb.ConfChangeV2
			if err := proto.Unmarshal(e.GetData(), &cc); err != nil {
				return fmt.Errorf("entry %d: ConfChangeV2 does not decode: %v", idx, err)
			}
			for _, ch := range cc.GetChanges() {
				wf.confChanges = append(wf.confChanges, confChange{idx, ch.GetType(), ch.GetNodeId()})
			}
		}
	}
	return nil
}

// snapFile is a .snap file that reads back with a valid CRC.
type snapFile struct {
	name        string
	term, index uint64
	snap        *raftpb.Snapshot
}

// checkSnaps reads every .snap file with etcd's snap package (read only: it
// is the Snapshotter's loading that renames broken files).
func (r *Report) checkSnaps(snapDir string) []snapFile {
	c := r.check("snap files", snapDir)
	entries, err := os.ReadDir(snapDir)
	if err != nil {
		c.add(-1, "", "%v", err)
		c.done("not checked")
		return nil
	}
	var good []snapFile
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".snap") {
			continue
		}
		path := filepath.Join(snapDir, e.Name())
		c.file = path
		term, index, ok := etcdfmt.ParseSnapName(e.Name())
		if !ok {
			c.add(-1, "", "not a .snap file name (want %%016x-%%016x.snap)")
			continue
		}
		s, err := snap.Read(zap.NewNop(), path)
		switch {
		case errors.Is(err, snap.ErrCRCMismatch):
			c.add(-1, "", "CRC mismatch: the .snap file is damaged")
			continue
		case err != nil:
			c.add(-1, "", "cannot read: %v", err)
			continue
		case s.GetMetadata().GetTerm() != term || s.GetMetadata().GetIndex() != index:
			c.add(-1, "", "holds term %d index %d, its name says term %d index %d", s.GetMetadata().GetTerm(), s.GetMetadata().GetIndex(), term, index)
			continue
		}
		good = append(good, snapFile{e.Name(), term, index, s})
	}
	c.file = snapDir
	c.done("%d readable", len(good))
	sort.Slice(good, func(i, j int) bool { return good[i].index < good[j].index })
	return good
}

// checkAgreement checks that the db, the WAL and the .snap files describe
// the same member: the newest usable .snap is one the WAL refers to, the
// db's consistent index lies between that snapshot and the WAL's commit,
// and the membership in the db is what the .snap and the WAL's
// configuration changes up to the consistent index make it.
func (r *Report) checkAgreement(dir string, facts dbFacts, wf walFacts, snaps []snapFile) {
	c := r.check("agreement", dir)
	defer c.done("db, WAL and .snap files agree (consistent index, snapshot, membership)")
	if !facts.ok || !wf.ok {
		return // the problems above come first; the rest would only repeat them
	}
	var usable *snapFile
	var newestWAL uint64
	for _, ws := range wf.snapshots {
		newestWAL = max(newestWAL, ws.GetIndex())
		for i := range snaps {
			if snaps[i].index == ws.GetIndex() && snaps[i].term == ws.GetTerm() && (usable == nil || snaps[i].index > usable.index) {
				usable = &snaps[i]
			}
		}
	}
	var snapIndex uint64
	if usable != nil {
		snapIndex = usable.index
	} else if newestWAL > 0 {
		c.add(-1, "", "no readable .snap file matches a snapshot record of the WAL (newest at index %d): etcd cannot start from this data dir", newestWAL)
		return
	}
	ci := facts.consistentIndex
	if ci < snapIndex {
		c.add(-1, "meta/consistent_index", "the db's consistent index %d is behind the .snap at index %d", ci, snapIndex)
	}
	if ci > wf.commit {
		c.add(-1, "meta/consistent_index", "the db's consistent index %d is past the WAL's committed index %d: the WAL lost entries the db applied", ci, wf.commit)
	}

	members := map[uint64]bool{}
	if usable != nil {
		var err error
		if members, err = snapMembers(usable.snap); err != nil {
			c.add(-1, usable.name, "membership in the .snap file does not decode: %v", err)
			return
		}
	}
	for _, cc := range wf.confChanges {
		if cc.index <= snapIndex || cc.index > ci {
			continue
		}
		switch cc.typ {
		case raftpb.ConfChangeAddNode, raftpb.ConfChangeAddLearnerNode:
			members[cc.nodeID] = true
		case raftpb.ConfChangeRemoveNode:
			delete(members, cc.nodeID)
		}
	}
	if missing, extra := diffIDs(members, facts.members); len(missing)+len(extra) > 0 {
		c.add(-1, "members", "the db's members differ from the .snap and WAL: missing %v, not expected %v", missing, extra)
	}
	if wf.nodeID != 0 && !facts.members[wf.nodeID] {
		c.add(-1, "members", "this member (%x, from the WAL) is not in the db's members", wf.nodeID)
	}
}

// snapMembers decodes the member IDs in a .snap file's v2 store.
func snapMembers(s *raftpb.Snapshot) (map[uint64]bool, error) {
	ms, err := etcdfmt.SnapMembers(s.GetData())
	ids := make(map[uint64]bool, len(ms))
	for id := range ms {
		ids[id] = true
	}
	return ids, err
}

func diffIDs(want, got map[uint64]bool) (missing, extra []string) {
	for id := range want {
		if !got[id] {
			missing = append(missing, fmt.Sprintf("%x", id))
		}
	}
	for id := range got {
		if !want[id] {
			extra = append(extra, fmt.Sprintf("%x", id))
		}
	}
	sort.Strings(missing)
	sort.Strings(extra)
	return missing, extra
}
