package etcdfmt

import (
	"fmt"

	"go.etcd.io/etcd/server/v3/etcdserver"
	"go.etcd.io/etcd/server/v3/etcdserver/api/membership"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v2store"
	"go.uber.org/zap"
)

// SnapMembers decodes the membership a .snap file's v2 store holds (its
// raftpb.Snapshot data), with etcd's own store and membership code, under
// a panic guard: the file is outside input.
func SnapMembers(data []byte) (members map[uint64]*membership.Member, err error) {
	defer func() {
		if p := recover(); p != nil {
			members, err = nil, fmt.Errorf("%w: .snap membership: %v", ErrSchema, p)
		}
	}()
	st := v2store.New(etcdserver.StoreClusterPrefix, etcdserver.StoreKeysPrefix)
	if err := st.Recovery(data); err != nil {
		return nil, err
	}
	ms, _ := membership.MembersFromStore(zap.NewNop(), st)
	members = make(map[uint64]*membership.Member, len(ms))
	for id, m := range ms {
		members[uint64(id)] = m
	}
	return members, nil
}
