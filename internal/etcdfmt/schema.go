// Package etcdfmt is the single home of etcd's on-disk format knowledge:
// bolt bucket and meta key names, the 17-byte revision keys of the key bucket
// and their tombstone mark, decoding of stored KeyValues, and the sha256
// trailer of snapshot files. Every etcdkit command reads etcd's files through
// these definitions so that no package re-declares them.
package etcdfmt

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/encoding/protowire"
)

// Bucket names of etcd's bolt backend (server/storage/schema).
var (
	BucketKey            = []byte("key")
	BucketMeta           = []byte("meta")
	BucketLease          = []byte("lease")
	BucketAlarm          = []byte("alarm")
	BucketCluster        = []byte("cluster")
	BucketMembers        = []byte("members")
	BucketMembersRemoved = []byte("members_removed")
	BucketAuth           = []byte("auth")
	BucketAuthUsers      = []byte("authUsers")
	BucketAuthRoles      = []byte("authRoles")
)

// Keys of the meta bucket.
var (
	MetaConsistentIndex     = []byte("consistent_index")
	MetaTerm                = []byte("term")
	MetaScheduledCompactRev = []byte("scheduledCompactRev")
	MetaFinishedCompactRev  = []byte("finishedCompactRev")
	MetaConfState           = []byte("confState")
	MetaStorageVersion      = []byte("storageVersion")
)

// Keys of the auth bucket: authEnabled holds one byte (1: enabled),
// authRevision 8 bytes big-endian.
var (
	AuthEnabled  = []byte("authEnabled")
	AuthRevision = []byte("authRevision")
)

const (
	// RevKeyLen is the length of a key-bucket key: 8-byte main revision,
	// '_', 8-byte sub revision, all big-endian.
	RevKeyLen = 17
	// TombstoneKeyLen is RevKeyLen plus the trailing tombstone mark.
	TombstoneKeyLen = RevKeyLen + 1
	// TombstoneMark is the 18th byte that marks a delete in the key bucket.
	TombstoneMark = 't'
)

// Revision is an etcd MVCC revision: the main revision of a transaction and
// the sub revision of one change inside it.
type Revision struct {
	Main int64
	Sub  int64
}

// AppendKey appends the key-bucket encoding of r (with the tombstone mark when
// tombstone is true) to dst.
func (r Revision) AppendKey(dst []byte, tombstone bool) []byte {
	dst = binary.BigEndian.AppendUint64(dst, uint64(r.Main))
	dst = append(dst, '_')
	dst = binary.BigEndian.AppendUint64(dst, uint64(r.Sub))
	if tombstone {
		dst = append(dst, TombstoneMark)
	}
	return dst
}

// ErrBadRevKey reports a key-bucket key that is not a revision.
var ErrBadRevKey = errors.New("malformed revision key")

// ParseRevKey decodes a key-bucket key into its revision and tombstone flag.
func ParseRevKey(k []byte) (rev Revision, tombstone bool, err error) {
	switch {
	case len(k) == RevKeyLen:
	case len(k) == TombstoneKeyLen && k[RevKeyLen] == TombstoneMark:
		tombstone = true
	default:
		return Revision{}, false, fmt.Errorf("%w: %x", ErrBadRevKey, k)
	}
	if k[8] != '_' {
		return Revision{}, false, fmt.Errorf("%w: %x", ErrBadRevKey, k)
	}
	rev.Main = int64(binary.BigEndian.Uint64(k[:8]))
	rev.Sub = int64(binary.BigEndian.Uint64(k[9:17]))
	return rev, tombstone, nil
}

// RevKeyCode is an order code of a key-bucket key: main<<24 | sub<<1 |
// tombstone, so that codes compare as the keys do. Keys whose main
// revision reaches 2^39 or sub revision 2^23 have none.
func RevKeyCode(k []byte) (uint64, bool) {
	r, tomb, err := ParseRevKey(k)
	if err != nil || r.Main < 0 || r.Main >= 1<<39 || r.Sub < 0 || r.Sub >= 1<<23 {
		return 0, false
	}
	c := uint64(r.Main)<<24 | uint64(r.Sub)<<1
	if tomb {
		c |= 1
	}
	return c, true
}

// RevOfCode is the main revision of a RevKeyCode.
func RevOfCode(c uint64) int64 { return int64(c >> 24) }

// ParseCompactRev decodes the 17-byte revision stored under the meta keys
// scheduledCompactRev and finishedCompactRev and returns its main revision.
func ParseCompactRev(v []byte) (int64, error) {
	rev, _, err := ParseRevKey(v)
	if err != nil {
		return 0, err
	}
	return rev.Main, nil
}

// ParseUint64 decodes an 8-byte big-endian meta value such as
// consistent_index or term.
func ParseUint64(v []byte) (uint64, error) {
	if len(v) != 8 {
		return 0, fmt.Errorf("meta value has %d bytes, want 8", len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}

// KeyValue holds the fields of a stored mvccpb.KeyValue that etcdkit reads
// without a full protobuf unmarshal (which allocates for every record).
type KeyValue struct {
	Key            []byte // aliases the input
	CreateRevision int64
	ModRevision    int64
	Version        int64
	Lease          int64
}

// ParseKeyValue decodes the scalar fields and the key of a marshalled
// mvccpb.KeyValue (field numbers: key 1, create_revision 2, mod_revision 3,
// version 4, value 5, lease 6). The value bytes are skipped.
func ParseKeyValue(b []byte) (KeyValue, error) {
	var kv KeyValue
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return kv, fmt.Errorf("%w: bad KeyValue: %w", ErrSchema, protowire.ParseError(n))
		}
		b = b[n:]
		switch {
		case num == 1 && typ == protowire.BytesType:
			v, m := protowire.ConsumeBytes(b)
			if m < 0 {
				return kv, fmt.Errorf("%w: bad KeyValue key: %w", ErrSchema, protowire.ParseError(m))
			}
			kv.Key, n = v, m
		case num >= 2 && num <= 4 || num == 6:
			if typ != protowire.VarintType {
				return kv, fmt.Errorf("%w: bad KeyValue: field %d has wire type %d", ErrSchema, num, typ)
			}
			v, m := protowire.ConsumeVarint(b)
			if m < 0 {
				return kv, fmt.Errorf("%w: bad KeyValue field %d: %w", ErrSchema, num, protowire.ParseError(m))
			}
			switch num {
			case 2:
				kv.CreateRevision = int64(v)
			case 3:
				kv.ModRevision = int64(v)
			case 4:
				kv.Version = int64(v)
			case 6:
				kv.Lease = int64(v)
			}
			n = m
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return kv, fmt.Errorf("%w: bad KeyValue field %d: %w", ErrSchema, num, protowire.ParseError(n))
			}
		}
		b = b[n:]
	}
	return kv, nil
}

// MemberKey is the key of a member in the members and members_removed
// buckets: its ID in lower-case hex without leading zeros.
func MemberKey(id uint64) []byte {
	return strconv.AppendUint(nil, id, 16)
}

// Uint64Value encodes a meta value such as consistent_index or term.
func Uint64Value(v uint64) []byte {
	return binary.BigEndian.AppendUint64(nil, v)
}

// ParseLeaseKey decodes a key of the lease bucket: the lease ID, 8 bytes
// big-endian.
func ParseLeaseKey(k []byte) (int64, error) {
	if len(k) != 8 {
		return 0, fmt.Errorf("lease key has %d bytes, want 8", len(k))
	}
	return int64(binary.BigEndian.Uint64(k)), nil
}

// LeaseKey is the lease bucket's key of a lease.
func LeaseKey(id int64) []byte {
	return binary.BigEndian.AppendUint64(nil, uint64(id))
}

// RequiredBuckets are the buckets every etcd 3.5+ server creates at start.
var RequiredBuckets = [][]byte{BucketKey, BucketMeta, BucketLease, BucketAlarm, BucketCluster, BucketMembers, BucketMembersRemoved, BucketAuth, BucketAuthUsers, BucketAuthRoles}

// ErrNotEtcd reports a bolt file that is not an etcd db: it lacks the key
// or the meta bucket.
var ErrNotEtcd = errors.New("not an etcd db")

// ErrSchema reports an etcd db whose entries break etcd's schema: a
// top-level entry that is not a bucket, a bucket where the key bucket
// holds revisions.
var ErrSchema = errors.New("damaged etcd schema")

// CheckBuckets refuses a bolt file whose top-level buckets lack etcd's key
// or meta bucket.
func CheckBuckets(top []string) error {
	have := map[string]bool{}
	for _, b := range top {
		have[b] = true
	}
	if !have[string(BucketKey)] || !have[string(BucketMeta)] {
		return fmt.Errorf("%w: no %q or %q bucket (buckets: %s)", ErrNotEtcd, BucketKey, BucketMeta, strings.Join(top, ", "))
	}
	return nil
}

// LatestRevision is the main revision of a db: that of the last entry of
// its key bucket (0 for an empty one), as etcd's mvcc store restores it.
func LatestRevision(keyBucket *bolt.Bucket) (int64, error) {
	k, _ := keyBucket.Cursor().Last()
	if k == nil {
		return 0, nil
	}
	r, _, err := ParseRevKey(k)
	return r.Main, err
}
