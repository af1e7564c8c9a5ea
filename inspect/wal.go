package inspect

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/server/v3/etcdserver/api/membership"
	"go.etcd.io/etcd/server/v3/storage/wal/walpb"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/etcdkit/etcdkit/internal/etcdfmt"
)

// ErrNoWAL reports an inspection of the WAL on a source that has none.
var ErrNoWAL = errors.New("the WAL is in a data dir: give --data-dir (and --wal-dir if it is elsewhere)")

// Statuses of a WAL entry against the db and the log's HardState.
const (
	StatusApplied     = "applied"     // at or below the db's consistent index
	StatusCommitted   = "committed"   // committed in the WAL, not in the db
	StatusUncommitted = "uncommitted" // not known committed: may be dropped
)

// WALRecord is one decoded record of the log.
type WALRecord struct {
	File   string `json:"file"`
	Offset int64  `json:"offset"`
	// Record is metadata, entry, state or snapshot.
	Record string `json:"record"`
	// Of an entry: its index, term, raft type, what it asks (Kind) and the
	// decoded request or configuration change.
	Index     uint64 `json:"index,omitempty"`
	Term      uint64 `json:"term,omitempty"`
	EntryType string `json:"entry_type,omitempty"`
	Kind      string `json:"kind,omitempty"`
	// Status is the entry's StatusApplied, StatusCommitted or
	// StatusUncommitted.
	Status  string                            `json:"status,omitempty"`
	Request *etcdserverpb.InternalRaftRequest `json:"-"`
	V2      *etcdfmt.V2Request                `json:"v2_request,omitempty"`
	Change  *raftpb.ConfChange                `json:"-"`
	Member  *membership.Member                `json:"member,omitempty"`
	// Of the other records.
	State    *raftpb.HardState      `json:"state,omitempty"`
	Snapshot *walpb.Snapshot        `json:"snapshot,omitempty"`
	Metadata *etcdserverpb.Metadata `json:"metadata,omitempty"`
}

// MarshalJSON adds the request (protobuf's JSON: bytes in base64, as
// etcdctl prints them) and the configuration change.
func (r WALRecord) MarshalJSON() ([]byte, error) {
	type plain WALRecord
	out := struct {
		plain
		Request json.RawMessage `json:"request,omitempty"`
		Change  any             `json:"conf_change,omitempty"`
	}{plain: plain(r)}
	if r.Request != nil {
		b, err := protojson.Marshal(r.Request)
		if err != nil {
			return nil, err
		}
		out.Request = b
	}
	if r.Change != nil {
		out.Change = map[string]any{"type": r.Change.GetType().String(), "node_id": fmt.Sprintf("%x", r.Change.GetNodeId())}
	}
	return json.Marshal(out)
}

// WALOptions filter the records: entries by index, all records by kind
// (an entry's request kind such as put or txn, or a record name:
// metadata, state, snapshot). Zero values select everything.
type WALOptions struct {
	FromIndex, ToIndex uint64
	Kinds              map[string]bool
}

func (o WALOptions) want(r *WALRecord) bool {
	if r.Record == "entry" && (r.Index < o.FromIndex || o.ToIndex > 0 && r.Index > o.ToIndex) {
		return false
	}
	if len(o.Kinds) == 0 {
		return true
	}
	if r.Record == "entry" {
		return o.Kinds[r.Kind]
	}
	return o.Kinds[r.Record]
}

// WALSummary is what the whole log says, for the line between applied and
// lost entries.
type WALSummary struct {
	Records, Entries int
	// FirstIndex and LastIndex bound the entries the log holds.
	FirstIndex, LastIndex uint64
	// Commit is the last HardState's commit index.
	Commit uint64
	// ConsistentIndex is the db's (DBErr says why it is unknown).
	ConsistentIndex uint64
	DBErr           error
	// Applied, Committed and Uncommitted count the entries by status
	// (an entry replaced by a later leader's counts once, as its last
	// version).
	Applied, Committed, Uncommitted int
}

// WAL decodes every record of a data dir's log in file order and passes
// those opts select to fn, each entry with its status: applied (the db's
// consistent index has passed it), committed (the log's HardState says
// committed, the db has not applied it: a server starting on the data dir
// applies it), or uncommitted (it may never be applied). The log is read
// twice, one record at a time: first for its final commit index. The db
// is only peeked at for its consistent index; an unreadable db leaves
// DBErr set and every entry at most committed.
func WAL(o *Opened, opts WALOptions, fn func(*WALRecord) error) (WALSummary, error) {
	var s WALSummary
	if o.WALDir == "" {
		return s, ErrNoWAL
	}
	if m, err := peekMeta(o); err != nil {
		s.DBErr = err
	} else {
		s.ConsistentIndex = m.ConsistentIndex
	}
	head, err := etcdfmt.ReadWALHead(o.WALDir)
	if err != nil {
		return s, err
	}
	s.Commit = head.Commit
	status := func(index uint64) string {
		switch {
		case s.DBErr == nil && index <= s.ConsistentIndex:
			return StatusApplied
		case index <= s.Commit:
			return StatusCommitted
		}
		return StatusUncommitted
	}
	counts := map[uint64]string{} // only for the counts; entries are small
	err = etcdfmt.ReadWAL(o.WALDir, func(f etcdfmt.WALFile, rec etcdfmt.WALRecord) error {
		r, err := decodeWALRecord(rec)
		if err != nil {
			return fmt.Errorf("%w: %s/%s: offset %d: %w", etcdfmt.ErrWALCorrupt, o.WALDir, f.Name, rec.Offset, err)
		}
		r.File = f.Name
		s.Records++
		if r.Record == "entry" {
			s.Entries++
			r.Status = status(r.Index)
			if s.FirstIndex == 0 || r.Index < s.FirstIndex {
				s.FirstIndex = r.Index
			}
			if r.Index <= s.LastIndex {
				for i := r.Index; i <= s.LastIndex; i++ {
					delete(counts, i) // a new leader replaced the tail
				}
			}
			s.LastIndex = r.Index
			counts[r.Index] = r.Status
		}
		if !opts.want(r) {
			return nil
		}
		return fn(r)
	})
	for _, st := range counts {
		switch st {
		case StatusApplied:
			s.Applied++
		case StatusCommitted:
			s.Committed++
		default:
			s.Uncommitted++
		}
	}
	return s, err
}

// decodeWALRecord decodes a record as etcd does when it replays the log.
func decodeWALRecord(rec etcdfmt.WALRecord) (*WALRecord, error) {
	data := rec.Record.GetData()
	r := &WALRecord{Offset: rec.Offset}
	switch rec.Record.GetType() {
	case etcdfmt.WALMetadata:
		r.Record, r.Metadata = "metadata", &etcdserverpb.Metadata{}
		return r, proto.Unmarshal(data, r.Metadata)
	case etcdfmt.WALState:
		r.Record, r.State = "state", &raftpb.HardState{}
		return r, proto.Unmarshal(data, r.State)
	case etcdfmt.WALSnapshot:
		r.Record, r.Snapshot = "snapshot", &walpb.Snapshot{}
		return r, proto.Unmarshal(data, r.Snapshot)
	case etcdfmt.WALEntry:
	default:
		return nil, fmt.Errorf("unknown record type %d", rec.Record.GetType())
	}
	var e raftpb.Entry
	if err := proto.Unmarshal(data, &e); err != nil {
		return nil, fmt.Errorf("entry: %w", err)
	}
	r.Record, r.Index, r.Term, r.EntryType = "entry", e.GetIndex(), e.GetTerm(), e.GetType().String()
	switch {
	case e.GetType() == raftpb.EntryConfChange:
		r.Change = &raftpb.ConfChange{}
		if err := proto.Unmarshal(e.GetData(), r.Change); err != nil {
			return nil, fmt.Errorf("entry %d: ConfChange: %w", e.Index, err)
		}
		r.Kind = "conf_change"
		if len(r.Change.GetContext()) > 0 {
			r.Member = &membership.Member{}
			if err := json.Unmarshal(r.Change.GetContext(), r.Member); err != nil {
				return nil, fmt.Errorf("entry %d: ConfChange member: %w", e.Index, err)
			}
		}
	case e.GetType() == raftpb.EntryConfChangeV2:
		r.Kind = "conf_change_v2"
	case len(e.GetData()) == 0:
		r.Kind = "empty" // a new leader's first entry
	default:
		if v2, ok := etcdfmt.ParseV2Request(e.GetData()); ok {
			r.Kind, r.V2 = "v2_request", &v2
			return r, nil
		}
		r.Request = &etcdserverpb.InternalRaftRequest{}
		if err := proto.Unmarshal(e.GetData(), r.Request); err != nil {
			return nil, fmt.Errorf("entry %d: request: %w", e.Index, err)
		}
		redact(r.Request)
		r.Kind = requestKind(r.Request)
	}
	return r, nil
}

// requestKind is the name of the request an InternalRaftRequest carries:
// its one set field besides the header and ID (put, delete_range, txn,
// compaction, lease_grant, auth_user_add, cluster_member_attr_set, ...).
func requestKind(req *etcdserverpb.InternalRaftRequest) string {
	kind := "unknown"
	req.ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, _ protoreflect.Value) bool {
		if name := string(fd.Name()); name != "header" && name != "ID" {
			kind = name
			return false
		}
		return true
	})
	return kind
}

// redact drops passwords and password hashes: the log holds them for auth
// requests, an inspection never prints them.
func redact(req *etcdserverpb.InternalRaftRequest) {
	if u := req.AuthUserAdd; u != nil {
		u.Password, u.HashedPassword = "", ""
	}
	if u := req.AuthUserChangePassword; u != nil {
		u.Password, u.HashedPassword = "", ""
	}
	if a := req.Authenticate; a != nil {
		a.Password = ""
	}
}

// Summary is the record as one readable line.
func (r *WALRecord) Summary() string {
	switch r.Record {
	case "metadata":
		return fmt.Sprintf("metadata member=%x cluster=%x", r.Metadata.GetNodeID(), r.Metadata.GetClusterID())
	case "state":
		return fmt.Sprintf("state term=%d vote=%x commit=%d", r.State.GetTerm(), r.State.GetVote(), r.State.GetCommit())
	case "snapshot":
		return fmt.Sprintf("snapshot index=%d term=%d", r.Snapshot.GetIndex(), r.Snapshot.GetTerm())
	}
	head := fmt.Sprintf("entry index=%d term=%d", r.Index, r.Term)
	if r.Status != "" {
		head += " " + r.Status
	}
	switch {
	case r.Change != nil:
		s := fmt.Sprintf("%s conf_change %s node=%x", head, strings.ToLower(strings.TrimPrefix(r.Change.GetType().String(), "ConfChange")), r.Change.GetNodeId())
		if m := r.Member; m != nil {
			s += fmt.Sprintf(" peer_urls=%s learner=%v", strings.Join(m.PeerURLs, ","), m.IsLearner)
		}
		return s
	case r.V2 != nil:
		return fmt.Sprintf("%s v2_request method=%s path=%s val=%s", head, r.V2.Method, r.V2.Path, r.V2.Val)
	case r.Request == nil:
		return head + " " + r.Kind
	}
	return head + " " + describeRequest(r.Request, r.Kind)
}

func describeRequest(req *etcdserverpb.InternalRaftRequest, kind string) string {
	switch {
	case req.Put != nil:
		return describePut(req.Put)
	case req.DeleteRange != nil:
		return describeDelete(req.DeleteRange)
	case req.Txn != nil:
		return "txn " + describeTxn(req.Txn)
	case req.Compaction != nil:
		return fmt.Sprintf("compaction revision=%d physical=%v", req.Compaction.Revision, req.Compaction.Physical)
	case req.LeaseGrant != nil:
		return fmt.Sprintf("lease_grant id=%016x ttl=%d", req.LeaseGrant.ID, req.LeaseGrant.TTL)
	case req.LeaseRevoke != nil:
		return fmt.Sprintf("lease_revoke id=%016x", req.LeaseRevoke.ID)
	case req.LeaseCheckpoint != nil:
		var parts []string
		for _, c := range req.LeaseCheckpoint.GetCheckpoints() {
			parts = append(parts, fmt.Sprintf("%016x:%ds", c.ID, c.Remaining_TTL))
		}
		return "lease_checkpoint " + strings.Join(parts, " ")
	case req.Alarm != nil:
		return fmt.Sprintf("alarm action=%s member=%x alarm=%s", req.Alarm.Action, req.Alarm.MemberID, req.Alarm.Alarm)
	case req.ClusterMemberAttrSet != nil:
		a := req.ClusterMemberAttrSet
		return fmt.Sprintf("cluster_member_attr_set member=%x name=%q client_urls=%s", a.Member_ID, a.GetMemberAttributes().GetName(), strings.Join(a.GetMemberAttributes().GetClientUrls(), ","))
	case req.ClusterVersionSet != nil:
		return "cluster_version_set version=" + req.ClusterVersionSet.Ver
	}
	// Auth and the rarer requests: their fields as protobuf text.
	b, err := protojson.MarshalOptions{}.Marshal(req)
	if err != nil {
		return kind
	}
	return kind + " " + string(b)
}

func describePut(p *etcdserverpb.PutRequest) string {
	return fmt.Sprintf("put key=%q value_size=%d lease=%x", p.Key, len(p.Value), p.Lease)
}

func describeDelete(d *etcdserverpb.DeleteRangeRequest) string {
	if len(d.RangeEnd) == 0 {
		return fmt.Sprintf("delete_range key=%q", d.Key)
	}
	return fmt.Sprintf("delete_range key=%q range_end=%q", d.Key, d.RangeEnd)
}

func describeTxn(t *etcdserverpb.TxnRequest) string {
	ops := func(list []*etcdserverpb.RequestOp) string {
		var parts []string
		for _, op := range list {
			switch {
			case op.GetRequestPut() != nil:
				parts = append(parts, describePut(op.GetRequestPut()))
			case op.GetRequestDeleteRange() != nil:
				parts = append(parts, describeDelete(op.GetRequestDeleteRange()))
			case op.GetRequestRange() != nil:
				parts = append(parts, fmt.Sprintf("range key=%q", op.GetRequestRange().Key))
			case op.GetRequestTxn() != nil:
				parts = append(parts, "txn "+describeTxn(op.GetRequestTxn()))
			}
		}
		return "[" + strings.Join(parts, "; ") + "]"
	}
	return fmt.Sprintf("compares=%d success=%s failure=%s", len(t.Compare), ops(t.Success), ops(t.Failure))
}
