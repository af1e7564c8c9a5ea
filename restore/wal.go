package restore

import (
	"encoding/json"
	"fmt"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/client/pkg/v3/types"
	"go.etcd.io/etcd/server/v3/etcdserver"
	"go.etcd.io/etcd/server/v3/etcdserver/api/membership"
	"go.etcd.io/etcd/server/v3/etcdserver/api/snap"
	"go.etcd.io/etcd/server/v3/storage/wal"
	"go.etcd.io/etcd/server/v3/storage/wal/walpb"
	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"
)

// writeWALAndSnap writes the new cluster's raft log for member self, as
// etcdutl does: a WAL holding the member and cluster IDs, one
// ConfChangeAddNode entry per member (term 1, indexes 1..n) committed by the
// HardState, then a .snap file with the membership at index n and the WAL
// record pointing at it. etcd's own wal and snap packages write and fsync
// the files.
func writeWALAndSnap(lg *zap.Logger, walDir, snapDir string, cl *membership.RaftCluster, self types.ID, commit, term uint64) error {
	md, err := proto.Marshal(&etcdserverpb.Metadata{NodeID: new(uint64(self)), ClusterID: new(uint64(cl.ID()))})
	if err != nil {
		return err
	}
	w, err := wal.Create(lg, walDir, md)
	if err != nil {
		return fmt.Errorf("create wal %s: %w", walDir, err)
	}
	defer func() {
		if w != nil {
			w.Close()
		}
	}()

	members := cl.Members() // sorted by ID
	ents := make([]*raftpb.Entry, len(members))
	voters := make([]uint64, len(members))
	for i, m := range members {
		ctx, err := json.Marshal(m)
		if err != nil {
			return err
		}
		cc, err := proto.Marshal(&raftpb.ConfChange{Type: raftpb.ConfChangeAddNode.Enum(), NodeId: new(uint64(m.ID)), Context: ctx})
		if err != nil {
			return err
		}
		ents[i] = &raftpb.Entry{Type: raftpb.EntryConfChange.Enum(), Term: new(term), Index: new(uint64(i + 1)), Data: cc}
		voters[i] = uint64(m.ID)
	}
	hs := &raftpb.HardState{Term: new(term), Vote: new(voters[0]), Commit: new(commit)}
	if err := w.Save(hs, ents); err != nil {
		return fmt.Errorf("write wal %s: %w", walDir, err)
	}
	cs := &raftpb.ConfState{Voters: voters}
	rs := &raftpb.Snapshot{
		Data:     etcdserver.GetMembershipInfoInV2Format(lg, cl),
		Metadata: &raftpb.SnapshotMetadata{Index: new(commit), Term: new(term), ConfState: cs},
	}
	if err := snap.New(lg, snapDir).SaveSnap(rs); err != nil {
		return fmt.Errorf("write snap file in %s: %w", snapDir, err)
	}
	if err := w.SaveSnapshot(&walpb.Snapshot{Index: new(commit), Term: new(term), ConfState: cs}); err != nil {
		return fmt.Errorf("write wal %s: %w", walDir, err)
	}
	err = w.Close()
	w = nil
	return err
}
