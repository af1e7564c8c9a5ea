package verify

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"strconv"
	"time"

	bolt "go.etcd.io/bbolt"
	"go.etcd.io/etcd/server/v3/lease/leasepb"
	"google.golang.org/protobuf/proto"

	"github.com/etcdkit/etcdkit/internal/boltdb"
	"github.com/etcdkit/etcdkit/internal/boltpage"
	"github.com/etcdkit/etcdkit/internal/etcdfmt"
)

// dbFacts is what the data-dir checks need from the db.
type dbFacts struct {
	ok              bool // the schema walk ran
	consistentIndex uint64
	members         map[uint64]bool
	removed         map[uint64]bool
}

// checkDB runs bolt's consistency checks (boltpage.File.Scan, which reads
// with pread and reports damage instead of faulting on it), then, on a db
// that passed them, the schema walk, and adds both to r in a fixed order.
// An error means the db could not be examined at all (locked by a running
// etcd).
func (r *Report) checkDB(path string, opts Options) (dbFacts, error) {
	// OpenMapped runs the pread scan (bolt's checks) before bbolt maps the
	// file: the schema walk reads only a db whose pages are sound. The key
	// bucket, nearly all of the db, is checked as that scan reads it (its
	// findings kept only if the scan passes); bbolt then walks the small
	// buckets. Walking the key bucket through the mapping as well faulted
	// in every page a second time: a third of verify's CPU.
	revs := newRevisionCheck(path, opts.LockTimeout)
	db, err := boltdb.OpenMapped(path, opts.LockTimeout, opts.Progress, func(e boltpage.Entry) error {
		if e.Depth == 1 && bytes.Equal(e.Top, etcdfmt.BucketKey) {
			revs.entry(e.Key, e.Value)
		}
		return nil
	})
	c := r.check("bolt", path)
	switch {
	case errors.Is(err, boltpage.ErrInUse), errors.Is(err, fs.ErrPermission):
		// Not examined is not damaged: locked by a running etcd, or not
		// readable by this user.
		return dbFacts{}, err
	case errors.Is(err, boltpage.ErrIntegrity), errors.Is(err, boltpage.ErrDamaged):
		c.add(-1, "", "%v", err)
		c.done("bolt's consistency check (page structure, freelist, key order)")
		s := r.check("schema", path)
		s.add(-1, "", "not read: the bolt structure is damaged, and a walk of it could loop or fault")
		s.done("not checked")
		return dbFacts{}, nil
	case err != nil:
		c.add(-1, "", "cannot open the db: %v", err)
		c.done("not checked")
		return dbFacts{}, nil
	}
	defer db.Close()
	if err := etcdfmt.CheckBuckets(db.Buckets); err != nil {
		return dbFacts{}, err
	}
	c.done("bolt's consistency check (page structure, freelist, key order)")

	schema := &Report{}
	var facts dbFacts
	walkErr := boltdb.Guard(func() error {
		return db.View(func(tx *bolt.Tx) error {
			facts = schema.walkSchema(tx, path, revs)
			return nil
		})
	})
	if walkErr != nil {
		c := r.check("schema", path)
		c.add(-1, "", "reading the db stopped: %v", walkErr)
		c.done("not completed")
		return dbFacts{}, nil
	}
	r.Checks = append(r.Checks, schema.Checks...)
	r.Problems = append(r.Problems, schema.Problems...)
	return facts, nil
}

// walkSchema checks etcd's schema in one read transaction.
func (r *Report) walkSchema(tx *bolt.Tx, path string, revs *revisionCheck) dbFacts {
	facts := dbFacts{members: map[uint64]bool{}, removed: map[uint64]bool{}}

	c := r.check("buckets", path)
	for _, b := range etcdfmt.RequiredBuckets {
		if tx.Bucket(b) == nil {
			c.add(-1, string(b), "bucket %q is missing", b)
		}
	}
	c.done("%d required buckets", len(etcdfmt.RequiredBuckets))

	r.checkMeta(tx, path, &facts)
	r.checkLeases(tx, path)
	if tx.Bucket(etcdfmt.BucketKey) == nil {
		r.check("revisions", path).done("no key bucket")
	} else {
		revs.report(r)
	}
	r.checkMembers(tx, path, &facts)
	facts.ok = true
	return facts
}

// checkMeta checks the meta bucket's keys.
func (r *Report) checkMeta(tx *bolt.Tx, path string, facts *dbFacts) {
	c := r.check("meta", path)
	defer c.done("consistent_index, term, compaction revisions, confState")
	meta := tx.Bucket(etcdfmt.BucketMeta)
	if meta == nil {
		c.add(-1, "meta", "no meta bucket")
		return
	}
	for _, k := range [][]byte{etcdfmt.MetaConsistentIndex, etcdfmt.MetaTerm} {
		v := meta.Get(k)
		if v == nil {
			c.add(-1, "meta/"+string(k), "%s is missing", k)
			continue
		}
		n, err := etcdfmt.ParseUint64(v)
		if err != nil {
			c.add(-1, "meta/"+string(k), "%s: %v", k, err)
			continue
		}
		if bytes.Equal(k, etcdfmt.MetaConsistentIndex) {
			facts.consistentIndex = n
		}
	}
	var revs [2]int64
	for i, k := range [][]byte{etcdfmt.MetaScheduledCompactRev, etcdfmt.MetaFinishedCompactRev} {
		if v := meta.Get(k); v != nil {
			rev, err := etcdfmt.ParseCompactRev(v)
			if err != nil {
				c.add(-1, "meta/"+string(k), "%s: %v", k, err)
			}
			revs[i] = rev
		}
	}
	if revs[1] > revs[0] && revs[0] != 0 {
		c.add(-1, "meta/"+string(etcdfmt.MetaFinishedCompactRev), "finished compaction %d is past the scheduled one %d", revs[1], revs[0])
	}
	if v := meta.Get(etcdfmt.MetaConfState); v != nil && !json.Valid(v) {
		c.add(-1, "meta/"+string(etcdfmt.MetaConfState), "confState is not valid JSON")
	}
}

// checkLeases checks the lease bucket.
func (r *Report) checkLeases(tx *bolt.Tx, path string) {
	c := r.check("leases", path)
	set := map[int64]bool{}
	b := tx.Bucket(etcdfmt.BucketLease)
	if b == nil {
		c.done("no lease bucket")
		return
	}
	_ = b.ForEach(func(k, v []byte) error {
		id, err := etcdfmt.ParseLeaseKey(k)
		if err != nil {
			c.add(-1, "lease/"+hex.EncodeToString(k), "%v", err)
			return nil
		}
		var l leasepb.Lease
		if err := proto.Unmarshal(v, &l); err != nil {
			c.add(-1, fmt.Sprintf("lease/%x", id), "value is not a Lease: %v", err)
		} else if l.GetID() != id {
			c.add(-1, fmt.Sprintf("lease/%x", id), "value holds lease %x", l.GetID())
		}
		set[id] = true
		return nil
	})
	c.done("%d leases", len(set))
}

// pendingLease is a live key whose lease is not in the lease bucket (so far).
type pendingLease struct {
	key   string
	rev   int64
	lease int64
}

// revisionCheck checks the key bucket one entry at a time, in revision
// order, as the scan reads it: every key a well-formed revision in strictly
// increasing order, every value a KeyValue consistent with its key, and no
// live key attached to a lease the lease bucket lacks. The lease IDs and
// the scheduled compaction come first, from a read of the lease and meta
// buckets alone (a few pages; the scan that follows checks them as well).
type revisionCheck struct {
	rep       Report // its findings, added to the verification's in order
	c         *checker
	leases    map[int64]bool
	scheduled int64 // a restore's marker entry sits at this revision
	h         etcdfmt.KeyHasher
	missing   map[etcdfmt.KeyID]pendingLease
	prev      []byte
	n         int
}

func newRevisionCheck(path string, lockTimeout time.Duration) *revisionCheck {
	rc := &revisionCheck{h: etcdfmt.NewKeyHasher(), missing: map[etcdfmt.KeyID]pendingLease{}}
	rc.c = rc.rep.check("revisions", path)
	rc.leases, rc.scheduled = peekLeases(path, lockTimeout)
	return rc
}

// peekLeases reads the lease IDs and the scheduled compaction revision,
// skipping every other bucket. Unreadable entries are left out: the full
// checks report them.
func peekLeases(path string, lockTimeout time.Duration) (map[int64]bool, int64) {
	leases := map[int64]bool{}
	var meta etcdfmt.DBMeta
	f, err := boltpage.Open(path, lockTimeout)
	if err != nil {
		return leases, 0 // the check that follows reports it
	}
	defer f.Close()
	_, _ = f.Scan(func(e boltpage.Entry) error {
		switch {
		case e.Depth == 0 && (bytes.Equal(e.Key, etcdfmt.BucketLease) || bytes.Equal(e.Key, etcdfmt.BucketMeta)):
			return nil
		case e.Depth == 0:
			return boltpage.SkipBucket
		case e.Depth != 1 || e.Bucket:
			return nil
		case bytes.Equal(e.Top, etcdfmt.BucketLease):
			if id, err := etcdfmt.ParseLeaseKey(e.Key); err == nil {
				leases[id] = true
			}
		default:
			_ = meta.Visit(e.Top, e.Key, e.Value) // the meta bucket's; a bad value stays 0
		}
		return nil
	})
	return leases, meta.Scheduled
}

// entry checks one key-bucket entry (v nil for a nested bucket).
func (rc *revisionCheck) entry(k, v []byte) {
	c := rc.c
	rc.n++
	if rc.prev != nil && bytes.Compare(rc.prev, k) >= 0 {
		c.add(-1, "key/"+hex.EncodeToString(k), "revision key out of order after %x", rc.prev)
	}
	rc.prev = append(rc.prev[:0], k...)
	rev, tomb, err := etcdfmt.ParseRevKey(k)
	if err != nil {
		c.add(-1, "key/"+hex.EncodeToString(k), "%v", err)
		return
	}
	if len(v) == 0 && !tomb && rev.Main == rc.scheduled && rev.Sub == 0 {
		return // the marker of restore --bump-revision --mark-compacted
	}
	kv, err := etcdfmt.ParseKeyValue(v)
	if err != nil {
		c.add(-1, fmt.Sprintf("key/%d_%d", rev.Main, rev.Sub), "revision %d: value is not a KeyValue: %v", rev.Main, err)
		return
	}
	loc := func() string { return fmt.Sprintf("key/%d_%d %s", rev.Main, rev.Sub, strconv.Quote(string(kv.Key))) }
	if len(kv.Key) == 0 {
		c.add(-1, loc(), "revision %d: KeyValue without a key", rev.Main)
		return
	}
	// Fingerprints only while some live key's lease is missing: the
	// common case costs no hashing.
	if tomb {
		if len(rc.missing) > 0 {
			delete(rc.missing, rc.h.ID(kv.Key))
		}
		return
	}
	switch {
	case kv.ModRevision != rev.Main:
		c.add(-1, loc(), "mod_revision %d does not match its key's revision %d", kv.ModRevision, rev.Main)
	case kv.CreateRevision <= 0 || kv.CreateRevision > kv.ModRevision:
		c.add(-1, loc(), "create_revision %d is not in 1..%d", kv.CreateRevision, kv.ModRevision)
	case kv.Version < 1:
		c.add(-1, loc(), "version %d is below 1", kv.Version)
	}
	if kv.Lease != 0 && !rc.leases[kv.Lease] {
		rc.missing[rc.h.ID(kv.Key)] = pendingLease{key: string(kv.Key), rev: rev.Main, lease: kv.Lease}
	} else if len(rc.missing) > 0 {
		delete(rc.missing, rc.h.ID(kv.Key))
	}
}

// report adds the revisions and key leases checks to r.
func (rc *revisionCheck) report(r *Report) {
	rc.c.done("%d revisions", rc.n)
	lc := rc.rep.check("key leases", rc.c.file)
	for _, m := range rc.missing {
		lc.add(-1, "key/"+strconv.Quote(m.key), "live key (revision %d) is attached to lease %x, which the lease bucket does not hold", m.rev, m.lease)
	}
	lc.done("live keys' leases exist")
	r.Checks = append(r.Checks, rc.rep.Checks...)
	r.Problems = append(r.Problems, rc.rep.Problems...)
}

// checkMembers checks the members buckets and records the member IDs.
func (r *Report) checkMembers(tx *bolt.Tx, path string, facts *dbFacts) {
	c := r.check("members", path)
	for _, bucket := range [][]byte{etcdfmt.BucketMembers, etcdfmt.BucketMembersRemoved} {
		b := tx.Bucket(bucket)
		if b == nil {
			continue
		}
		_ = b.ForEach(func(k, v []byte) error {
			loc := string(bucket) + "/" + string(k)
			id, err := strconv.ParseUint(string(k), 16, 64)
			if err != nil {
				c.add(-1, loc, "member key is not a hex ID")
				return nil
			}
			if bytes.Equal(bucket, etcdfmt.BucketMembersRemoved) {
				facts.removed[id] = true
				return nil
			}
			var m struct {
				ID uint64 `json:"id"`
			}
			if err := json.Unmarshal(v, &m); err != nil {
				c.add(-1, loc, "member is not valid JSON: %v", err)
			} else if m.ID != id {
				c.add(-1, loc, "member value holds ID %x", m.ID)
			}
			facts.members[id] = true
			return nil
		})
	}
	c.done("%d members, %d removed", len(facts.members), len(facts.removed))
}
