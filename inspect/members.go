package inspect

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/server/v3/etcdserver/api/membership"
	"go.etcd.io/etcd/server/v3/etcdserver/api/snap"
	"go.etcd.io/etcd/server/v3/storage/datadir"
	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/zap"

	"github.com/etcdkit/etcdkit/internal/etcdfmt"
)

// MemberView is the cluster's membership as each source of a member's
// data says it.
type MemberView struct {
	// DB is the db's members bucket, by ID: what etcdctl member list
	// prints from a server started on it.
	DB []*etcdserverpb.Member
	// Log is, for a data dir, the membership of the newest .snap the WAL
	// refers to with the WAL's committed configuration changes and member
	// attributes applied: what the raft log says. LogErr says why it is
	// missing.
	Log    []*etcdserverpb.Member
	LogErr error
	// Disagreements describe how DB and Log differ, one line each.
	Disagreements []string
}

// Members reads the membership from the db and, for a data dir, from its
// .snap files and WAL, and compares them.
func Members(ctx context.Context, o *Opened) (*MemberView, error) {
	v := &MemberView{}
	visit := func(bucket, k, val []byte) error {
		members, gone := bytes.Equal(bucket, etcdfmt.BucketMembers), bytes.Equal(bucket, etcdfmt.BucketMembersRemoved)
		if !members && !gone {
			return nil
		}
		id, err := strconv.ParseUint(string(k), 16, 64)
		if err != nil {
			return fmt.Errorf("%w: %s: key %q is not a member ID", etcdfmt.ErrSchema, bucket, k)
		}
		if gone {
			return nil // removed IDs: not members
		}
		var m membership.Member
		if err := json.Unmarshal(val, &m); err != nil {
			return fmt.Errorf("%w: member %x: %w", etcdfmt.ErrSchema, id, err)
		}
		v.DB = append(v.DB, toPB(&m))
		return nil
	}
	if _, _, err := scan(ctx, o, visit); err != nil {
		return nil, err
	}
	if o.WALDir == "" {
		return v, nil
	}
	v.Log, v.LogErr = logMembers(o)
	if v.LogErr == nil {
		v.Disagreements = diffMembers(v.DB, v.Log)
	}
	return v, nil
}

func toPB(m *membership.Member) *etcdserverpb.Member {
	return &etcdserverpb.Member{ID: uint64(m.ID), Name: m.Name, PeerURLs: m.PeerURLs, ClientURLs: m.ClientURLs, IsLearner: m.IsLearner}
}

// memberChange is one WAL entry that changes the membership.
type memberChange struct {
	index uint64
	apply func(map[uint64]*membership.Member)
}

// logMembers replays the WAL's committed membership changes on the newest
// .snap the WAL refers to, as a starting etcd rebuilds its v2 store.
func logMembers(o *Opened) ([]*etcdserverpb.Member, error) {
	var changes []memberChange
	type snapRef struct{ term, index uint64 }
	var refs []snapRef
	sum, err := WAL(o, WALOptions{}, func(r *WALRecord) error {
		if r.Record == "snapshot" {
			refs = append(refs, snapRef{r.Snapshot.GetTerm(), r.Snapshot.GetIndex()})
			return nil
		}
		if r.Record != "entry" {
			return nil
		}
		k := sort.Search(len(changes), func(i int) bool { return changes[i].index >= r.Index })
		changes = changes[:k] // a new leader replaced the tail
		if c := memberChangeOf(r); c != nil {
			changes = append(changes, memberChange{r.Index, c})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	members := map[uint64]*membership.Member{}
	var snapIndex uint64
	// The newest .snap the WAL refers to, as etcd loads it.
	for i := len(refs) - 1; i >= 0; i-- {
		if refs[i].index == 0 {
			break
		}
		path := filepath.Join(datadir.ToSnapDir(o.DataDir), fmt.Sprintf("%016x-%016x.snap", refs[i].term, refs[i].index))
		s, err := snap.Read(zap.NewNop(), path)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if members, err = etcdfmt.SnapMembers(s.GetData()); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		snapIndex = refs[i].index
		break
	}
	for _, c := range changes {
		if c.index > snapIndex && c.index <= sum.Commit {
			c.apply(members)
		}
	}
	out := make([]*etcdserverpb.Member, 0, len(members))
	for _, m := range members {
		out = append(out, toPB(m))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// memberChangeOf is what an entry does to the membership, or nil: a
// configuration change, or a member publishing its name and client URLs.
func memberChangeOf(r *WALRecord) func(map[uint64]*membership.Member) {
	if cc := r.Change; cc != nil {
		id := cc.GetNodeId()
		return func(ms map[uint64]*membership.Member) {
			switch cc.GetType() {
			case raftpb.ConfChangeRemoveNode:
				delete(ms, id)
			case raftpb.ConfChangeAddNode, raftpb.ConfChangeAddLearnerNode:
				if old, ok := ms[id]; ok && cc.GetType() == raftpb.ConfChangeAddNode {
					old.IsLearner = false // a promotion
					return
				}
				if r.Member != nil {
					m := *r.Member
					ms[id] = &m
				}
			case raftpb.ConfChangeUpdateNode:
				if old, ok := ms[id]; ok && r.Member != nil {
					old.PeerURLs = r.Member.PeerURLs
				}
			}
		}
	}
	if v2 := r.V2; v2 != nil && v2.Method == "PUT" {
		// etcd 3.5 publishes a member's attributes with a v2 request:
		// PUT /0/members/<id>/attributes {"name":...,"clientURLs":[...]}.
		var id uint64
		var attrs membership.Attributes
		if _, err := fmt.Sscanf(v2.Path, "/0/members/%x/attributes", &id); err != nil || json.Unmarshal([]byte(v2.Val), &attrs) != nil {
			return nil
		}
		return func(ms map[uint64]*membership.Member) {
			if m, ok := ms[id]; ok {
				m.Attributes = attrs
			}
		}
	}
	if a := r.Request.GetClusterMemberAttrSet(); a != nil {
		return func(ms map[uint64]*membership.Member) {
			if m, ok := ms[a.GetMember_ID()]; ok {
				m.Name = a.GetMemberAttributes().GetName()
				m.ClientURLs = a.GetMemberAttributes().GetClientUrls()
			}
		}
	}
	return nil
}

// diffMembers describes how the db's members differ from the log's.
func diffMembers(db, log []*etcdserverpb.Member) []string {
	byID := func(ms []*etcdserverpb.Member) map[uint64]*etcdserverpb.Member {
		out := map[uint64]*etcdserverpb.Member{}
		for _, m := range ms {
			out[m.ID] = m
		}
		return out
	}
	a, b := byID(db), byID(log)
	var diffs []string
	for id, m := range a {
		l, ok := b[id]
		switch {
		case !ok:
			diffs = append(diffs, fmt.Sprintf("member %x is in the db but not in the WAL and .snap", id))
		case m.Name != l.Name:
			diffs = append(diffs, fmt.Sprintf("member %x: the db says name %q, the WAL %q", id, m.Name, l.Name))
		case !slices.Equal(m.PeerURLs, l.PeerURLs):
			diffs = append(diffs, fmt.Sprintf("member %x: the db says peer URLs %s, the WAL %s", id, strings.Join(m.PeerURLs, ","), strings.Join(l.PeerURLs, ",")))
		case !slices.Equal(m.ClientURLs, l.ClientURLs):
			diffs = append(diffs, fmt.Sprintf("member %x: the db says client URLs %s, the WAL %s", id, strings.Join(m.ClientURLs, ","), strings.Join(l.ClientURLs, ",")))
		case m.IsLearner != l.IsLearner:
			diffs = append(diffs, fmt.Sprintf("member %x: the db says learner %v, the WAL %v", id, m.IsLearner, l.IsLearner))
		}
	}
	for id := range b {
		if _, ok := a[id]; !ok {
			diffs = append(diffs, fmt.Sprintf("member %x is in the WAL and .snap but not in the db", id))
		}
	}
	sort.Strings(diffs)
	return diffs
}
