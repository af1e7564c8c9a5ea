package inspect

import (
	"bytes"
	"context"
	"os"
	"sort"

	"github.com/etcdkit/etcdkit/internal/etcdfmt"
)

// DUOptions shape the space report: keys are grouped by their prefix up
// to the Depth-th '/' (a leading '/' not counted), and the Top groups by
// stored bytes are listed (0: all).
type DUOptions struct {
	Depth, Top int
	// Group, when set, names each key's group instead of Depth's prefix
	// (the Kubernetes view groups by resource and namespace).
	Group func(key []byte) []byte
}

// Usage is the space one key prefix takes in the key bucket. Bytes are
// those of the bucket's entries: revision key plus stored KeyValue.
type Usage struct {
	Prefix     string `json:"prefix"`
	LiveKeys   int64  `json:"live_keys"`
	LiveBytes  int64  `json:"live_bytes"`
	Revisions  int64  `json:"revisions"`
	Bytes      int64  `json:"bytes"`
	Tombstones int64  `json:"tombstones"`
}

// HistoryBytes is what compaction at the current revision would free of
// the prefix: every entry but each live key's latest.
func (u Usage) HistoryBytes() int64 { return u.Bytes - u.LiveBytes }

// DUReport answers "what fills my quota".
type DUReport struct {
	Prefixes []Usage `json:"prefixes"`
	// Other sums the prefixes left out by Top; Total sums all.
	Other Usage `json:"other"`
	Total Usage `json:"total"`
	// Revision and CompactRevision of the db.
	Revision        int64 `json:"revision"`
	CompactRevision int64 `json:"compact_revision"`
	// FileBytes is the file's size, InUseBytes what its pages in use take,
	// FreeBytes its free pages: what a defrag would give back now.
	FileBytes  int64 `json:"file_bytes"`
	InUseBytes int64 `json:"in_use_bytes"`
	FreeBytes  int64 `json:"free_bytes"`
}

// keyState is what du keeps per key, packed into 8 bytes beside the key's
// 64-bit fingerprint (etcdfmt.KeyHasher.ID64: about n²/2⁶⁵ odds that two
// of n keys share one): its group, whether its latest entry is a tombstone
// and that entry's size. 16 bytes plus the map's own per key, so a db's
// key count, not its size or history, bounds the memory: about 50 MB for
// two million keys.
type keyState uint64

func newKeyState(group int32, size int, tomb bool) keyState {
	s := keyState(uint32(size)) | keyState(uint32(group))<<32
	if tomb {
		s |= 1 << 63
	}
	return s
}

func (s keyState) group() int32 { return int32(uint32(s>>32) &^ (1 << 31)) }
func (s keyState) size() int64  { return int64(uint32(s)) }
func (s keyState) tomb() bool   { return s>>63 != 0 }

// DU reports the space the key bucket takes by key prefix, in one checked
// pass: live keys and their bytes, all revisions and their bytes,
// tombstones, and what compaction and defrag would give back.
func DU(ctx context.Context, o *Opened, opts DUOptions) (*DUReport, error) {
	hasher := etcdfmt.NewKeyHasher()
	keys := map[uint64]keyState{}
	groups := map[string]int32{}
	var usage []Usage
	group := opts.Group
	if group == nil {
		group = func(key []byte) []byte { return prefixOf(key, opts.Depth) }
	}
	visit := onKeys(func(e keyEntry, v []byte) error {
		p := group(e.kv.Key)
		g, ok := groups[string(p)]
		if !ok {
			g = int32(len(usage))
			groups[string(p)] = g
			usage = append(usage, Usage{Prefix: string(p)})
		}
		size := etcdfmt.RevKeyLen + len(v)
		if e.tomb {
			size++
		}
		u := &usage[g]
		u.Revisions++
		u.Bytes += int64(size)
		if e.tomb {
			u.Tombstones++
		}
		keys[hasher.ID64(e.kv.Key)] = newKeyState(g, size, e.tomb)
		return nil
	}, nil)
	m, pages, err := scan(ctx, o, visit)
	if err != nil {
		return nil, err
	}
	for _, st := range keys {
		if !st.tomb() {
			usage[st.group()].LiveKeys++
			usage[st.group()].LiveBytes += st.size()
		}
	}
	sort.Slice(usage, func(i, j int) bool {
		if usage[i].Bytes != usage[j].Bytes {
			return usage[i].Bytes > usage[j].Bytes
		}
		return usage[i].Prefix < usage[j].Prefix
	})
	rep := &DUReport{Revision: m.Current(), CompactRevision: m.Compacted(), Total: Usage{Prefix: "total"}, Other: Usage{Prefix: "other"}}
	for i, u := range usage {
		rep.Total.add(u)
		if opts.Top > 0 && i >= opts.Top {
			rep.Other.add(u)
			continue
		}
		rep.Prefixes = append(rep.Prefixes, u)
	}
	fi, err := os.Stat(o.DB)
	if err != nil {
		return nil, err
	}
	rep.FileBytes = fi.Size()
	rep.InUseBytes, rep.FreeBytes = int64(pages.Reachable*pages.PageSize), int64(pages.Free*pages.PageSize)
	return rep, nil
}

func (u *Usage) add(o Usage) {
	u.LiveKeys += o.LiveKeys
	u.LiveBytes += o.LiveBytes
	u.Revisions += o.Revisions
	u.Bytes += o.Bytes
	u.Tombstones += o.Tombstones
}

// prefixOf is key up to and including its depth-th '/', a leading '/'
// not counted: "/registry/pods/ns/a" at depth 2 is "/registry/pods/". A
// key with fewer '/' belongs to the prefix up to its last '/' ("/" or ""
// for one with none past the leading one).
func prefixOf(key []byte, depth int) []byte {
	end := 0
	if len(key) > 0 && key[0] == '/' {
		end = 1
	}
	for n := 0; n < depth; n++ {
		j := bytes.IndexByte(key[end:], '/')
		if j < 0 {
			break
		}
		end += j + 1
	}
	return key[:end]
}
