package boltpage

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/etcdkit/etcdkit/internal/testetcd"
)

// bboltCheckEnv makes the test binary run bbolt's own Check on a file and
// exit: 0 clean, 1 problems reported; bbolt's panics on damaged pages kill
// the process with another code.
const bboltCheckEnv = "ETCDKIT_TEST_BBOLT_CHECK"

func TestMain(m *testing.M) {
	testetcd.RunChild(bboltCheckEnv, bboltCheck)
	os.Exit(m.Run())
}

func bboltCheck(path string) int {
	db, err := bolt.Open(path, 0o400, &bolt.Options{ReadOnly: true})
	if err != nil {
		fmt.Println(err)
		return 1
	}
	defer db.Close()
	code := 0
	db.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			fmt.Println(err)
			code = 1
		}
		return nil
	})
	return code
}

// bboltRejects runs bbolt's Check on path in a child process and reports
// whether it found the file damaged (reported problems or panicked).
func bboltRejects(t *testing.T, path string) bool {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), bboltCheckEnv+"="+path)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatal(err)
	}
	t.Logf("bbolt's Check: %s", firstLine(string(out)))
	return err != nil
}

func firstLine(s string) string { return strings.SplitN(strings.TrimSpace(s), "\n", 2)[0] }

// fixture writes a bolt db exercising what Scan must read: a tree several
// levels deep, nested buckets (inline and not), values spanning overflow
// pages, and free pages left by deletes. freelist chooses whether bolt
// stores its freelist (bolt's default) or not (etcd's); pageSize 0 is the
// system's page size.
func fixture(t *testing.T, freelist bool, pageSize int) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "fixture.db")
	db, err := bolt.Open(path, 0o600, &bolt.Options{NoFreelistSync: !freelist, PageSize: pageSize})
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		big, err := tx.CreateBucket([]byte("big"))
		if err != nil {
			return err
		}
		for i := range 20000 {
			if err := big.Put(fmt.Appendf(nil, "key-%06d", i), bytes.Repeat([]byte{byte(i)}, 100+i%200)); err != nil {
				return err
			}
		}
		nest, err := tx.CreateBucket([]byte("nest"))
		if err != nil {
			return err
		}
		small, err := nest.CreateBucket([]byte("inline"))
		if err != nil {
			return err
		}
		if err := small.Put([]byte("a"), []byte("1")); err != nil {
			return err
		}
		deep, err := nest.CreateBucket([]byte("deep"))
		if err != nil {
			return err
		}
		for i := range 3000 {
			if err := deep.Put(fmt.Appendf(nil, "d%05d", i), make([]byte, 64)); err != nil {
				return err
			}
		}
		if err := nest.Put([]byte("plain"), []byte("value")); err != nil {
			return err
		}
		huge, err := tx.CreateBucket([]byte("huge"))
		if err != nil {
			return err
		}
		return huge.Put([]byte("blob"), bytes.Repeat([]byte("x"), 50_000))
	})
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		big := tx.Bucket([]byte("big"))
		for i := 0; i < 20000; i += 3 {
			if err := big.Delete(fmt.Appendf(nil, "key-%06d", i)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// bboltEntries lists every entry of every bucket as bbolt's cursors see
// them, in Scan's order and notation.
func bboltEntries(t *testing.T, path string) (entries []string, free int) {
	t.Helper()
	db, err := bolt.Open(path, 0o400, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var walk func(b *bolt.Bucket, depth int)
	walk = func(b *bolt.Bucket, depth int) {
		c := b.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			entries = append(entries, entryString(Entry{Depth: depth, Bucket: v == nil, Key: k, Value: v}))
			if v == nil {
				walk(b.Bucket(k), depth+1)
			}
		}
	}
	db.View(func(tx *bolt.Tx) error {
		c := tx.Cursor()
		for k, _ := c.First(); k != nil; k, _ = c.Next() {
			entries = append(entries, entryString(Entry{Depth: 0, Bucket: true, Key: k}))
			walk(tx.Bucket(k), 1)
		}
		for err := range tx.Check() {
			t.Fatalf("bbolt's Check on the fixture: %v", err)
		}
		return nil
	})
	return entries, db.Stats().FreePageN
}

func entryString(e Entry) string {
	return fmt.Sprintf("%d %v %q %x", e.Depth, e.Bucket, e.Key, e.Value)
}

// TestScanMatchesBbolt reads clean files with Scan and with bbolt: the same
// entries in the same order, the same free pages, no problems.
func TestScanMatchesBbolt(t *testing.T) {
	for _, tc := range []struct {
		name     string
		freelist bool
		pageSize int
		longForm bool // the freelist's count in its first element, as bolt writes 64K ids or more
	}{
		{"stored freelist", true, 0, false},
		{"no freelist (etcd)", false, 0, false},
		{"16 KiB pages", false, 16384, false},
		{"8 KiB pages, stored freelist", true, 8192, false},
		{"freelist in long form", true, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			freelist := tc.freelist
			path := fixture(t, freelist, tc.pageSize)
			if tc.longForm {
				toLongForm(t, path)
			}
			want, wantFree := bboltEntries(t, path)
			f, err := Open(path, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if got := f.Meta.Freelist != NoFreelist; got != freelist {
				t.Fatalf("fixture stores a freelist: %v, want %v", got, freelist)
			}
			var got []string
			pages, err := f.Scan(func(e Entry) error {
				got = append(got, entryString(e))
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(want) {
				t.Fatalf("%d entries, bbolt reads %d", len(got), len(want))
			}
			for i := range got {
				if got[i] != want[i] {
					t.Fatalf("entry %d: %s, bbolt reads %s", i, got[i], want[i])
				}
			}
			if int(pages.Free) != wantFree || wantFree == 0 {
				t.Fatalf("%d free pages, bbolt counts %d (the fixture must have some)", pages.Free, wantFree)
			}
			if pages.Reachable+pages.Free != f.Meta.Pgid {
				t.Fatalf("%d reachable + %d free pages, high-water mark %d", pages.Reachable, pages.Free, f.Meta.Pgid)
			}
		})
	}
}

// readFixture returns the bytes of path and its meta page.
func readFixture(t *testing.T, path string) ([]byte, Meta) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	m, err := ReadMeta(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	return b, m
}

// toLongForm rewrites the freelist page of path in the form bolt uses for
// 64K ids or more: count 0xFFFF, the real count in the first element.
func toLongForm(t *testing.T, path string) {
	t.Helper()
	b, m := readFixture(t, path)
	off := int64(m.Freelist) * int64(m.PageSize)
	_, count, overflow := pageHeader(b[off:])
	ids := off + pageHeaderSize
	if ids+8*int64(count)+8 > off+int64(overflow+1)*int64(m.PageSize) || count == 0 {
		t.Fatalf("the freelist (%d ids) has no room for the long form", count)
	}
	copy(b[ids+8:], append([]byte(nil), b[ids:ids+8*int64(count)]...))
	binary.LittleEndian.PutUint64(b[ids:], uint64(count))
	binary.LittleEndian.PutUint16(b[off+10:], 0xFFFF)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// page is a decoded page header of a fixture, for the damage tests.
type page struct {
	id           uint64
	flags, count uint16
	overflow     uint32
	off          int64
	pgs          []uint64 // a branch page's children
}

func (p page) pgs0() uint64 {
	if len(p.pgs) == 0 {
		return 0
	}
	return p.pgs[0]
}

// pagesOf decodes the header (and a branch page's children) of every page
// reachable from the root of path, walking the tree by the format alone.
func pagesOf(t *testing.T, path string) (Meta, []page) {
	t.Helper()
	b, m := readFixture(t, path)
	le := binary.LittleEndian
	var out []page
	var walk func(id uint64)
	walk = func(id uint64) {
		off := int64(id) * int64(m.PageSize)
		flags, count, overflow := pageHeader(b[off:])
		p := page{id: id, flags: flags, count: count, overflow: overflow, off: off}
		for i := range int64(count) {
			e := off + pageHeaderSize + i*elemSize
			switch {
			case flags == branchPageFlag:
				p.pgs = append(p.pgs, le.Uint64(b[e+8:]))
			case le.Uint32(b[e:])&bucketLeafFlag != 0:
				if root := le.Uint64(b[e+int64(le.Uint32(b[e+4:]))+int64(le.Uint32(b[e+8:])):]); root != 0 {
					defer walk(root)
				}
			}
		}
		out = append(out, p)
		for _, c := range p.pgs {
			walk(c)
		}
	}
	walk(m.Root)
	return m, out
}

// TestScanFindsDamage damages copies of the fixture in one place each:
// Scan names the problem, bbolt's Check also rejects the file, and Scan
// never crashes.
func TestScanFindsDamage(t *testing.T) {
	for _, freelist := range []bool{true, false} {
		src := fixture(t, freelist, 0)
		m, tests, leaf := treeDamages(t, src)
		ps := int64(m.PageSize)
		u64 := func(v uint64) []byte { return binary.LittleEndian.AppendUint64(nil, v) }
		if freelist {
			fl := m.Freelist
			b := testetcd.Must(os.ReadFile(src))(t)
			count := binary.LittleEndian.Uint16(b[int64(fl)*ps+10:])
			if count == 0xFFFF || count < 2 {
				t.Fatalf("fixture freelist has %d ids; the tests expect a short list", count)
			}
			ids := int64(fl)*ps + pageHeaderSize
			first := binary.LittleEndian.Uint64(b[ids:])
			tests = append(tests, []damage{
				{"reachable page listed free", func() []patch { return []patch{{ids, u64(leaf.id)}} }, "reachable freed"},
				{"page freed twice", func() []patch { return []patch{{ids + 8, u64(first)}} }, "already freed"},
				{"free page not listed", func() []patch {
					return []patch{{int64(fl)*ps + 10, binary.LittleEndian.AppendUint16(nil, count-1)}, {ids, b[ids+8*int64(count-1) : ids+8*int64(count)]}}
				}, "unreachable unfreed"},
			}...)
		}
		for _, tc := range tests {
			t.Run(fmt.Sprintf("freelist=%v/%s", freelist, tc.name), func(t *testing.T) {
				path := tc.apply(t, src)
				f, err := Open(path, 0)
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				entries := 0
				_, err = f.Scan(func(Entry) error { entries++; return nil })
				if !errors.Is(err, ErrIntegrity) || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("Scan: %v\nwant ErrIntegrity naming %q", err, tc.want)
				}
				if entries == 0 {
					t.Fatal("Scan stopped before reading any entry")
				}
				if !bboltRejects(t, path) {
					t.Fatal("bbolt's Check accepts the damaged file: the damage is not one")
				}
			})
		}
	}
}

// TestScanCallbackError stops the scan at the callback's error.
func TestScanCallbackError(t *testing.T) {
	f, err := Open(fixture(t, false, 0), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	stop := errors.New("stop")
	n := 0
	if _, err := f.Scan(func(Entry) error {
		if n++; n == 100 {
			return stop
		}
		return nil
	}); err != stop || n != 100 {
		t.Fatalf("err = %v after %d entries, want the callback's error after 100", err, n)
	}
}

// TestOpenRefuses covers files Open must not scan.
func TestOpenRefuses(t *testing.T) {
	dir := t.TempDir()
	src := fixture(t, false, 0)
	b := testetcd.Must(os.ReadFile(src))(t)
	m := testetcd.Must(ReadMeta(bytes.NewReader(b)))(t)
	truncated := filepath.Join(dir, "truncated.db")
	testetcd.WriteFile(t, truncated, b[:int64(m.Pgid-1)*int64(m.PageSize)])
	zeros := filepath.Join(dir, "zeros.db")
	testetcd.WriteFile(t, zeros, make([]byte, 1<<16))
	short := filepath.Join(dir, "short.db")
	testetcd.WriteFile(t, short, []byte("bolt?"))
	// 8 KiB with valid meta checksums claiming 2^52 pages: pgid*pageSize
	// wrapped and the scanner's bitset asked for a slice too large.
	huge := filepath.Join(dir, "huge-pgid.db")
	hm := m
	hm.Pgid = 1 << 52
	testetcd.WriteFile(t, huge, append(hm.page(0), hm.page(1)...))
	hm.Pgid = 1<<64 - 1
	hugest := filepath.Join(dir, "max-pgid.db")
	testetcd.WriteFile(t, hugest, append(hm.page(0), hm.page(1)...))

	locked := fixture(t, false, 0)
	db, err := bolt.Open(locked, 0o600, nil) // holds the exclusive lock, as etcd does
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()

	for _, tc := range []struct {
		name, path string
		want       error
	}{
		{"missing", filepath.Join(dir, "nope.db"), os.ErrNotExist},
		{"truncated", truncated, ErrDamaged},
		{"zeros", zeros, ErrNotBolt},
		{"too short", short, ErrNotBolt},
		{"locked", locked, ErrInUse},
		{"page count 2^52", huge, ErrDamaged},
		{"page count 2^64-1", hugest, ErrDamaged},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := Open(tc.path, 200*time.Millisecond)
			if err == nil {
				f.Close()
			}
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.path) {
				t.Fatalf("err = %v, want %v naming the file", err, tc.want)
			}
		})
	}
}

// TestScanEmpty reads a fresh bolt file: two meta pages, the freelist and
// an empty root leaf, nothing free, no entries.
func TestScanEmpty(t *testing.T) {
	path := filepath.Join(t.TempDir(), "empty.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	f, err := Open(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	entries := 0
	pages, err := f.Scan(func(Entry) error { entries++; return nil })
	if err != nil || entries != 0 || pages != (Pages{Reachable: 4, PageSize: uint64(f.Meta.PageSize)}) {
		t.Fatalf("Scan: %v, %d entries, %+v; want no error, no entries, 4 pages in use", err, entries, pages)
	}
}

// TestRootHoldsOnlyBuckets: a meta page whose root is another bucket's leaf
// (its entries are keys, not buckets) is damage the scan reports.
func TestRootHoldsOnlyBuckets(t *testing.T) {
	src := smallFixture(t, 4096)
	b := testetcd.Must(os.ReadFile(src))(t)
	m := testetcd.Must(ReadMeta(bytes.NewReader(b)))(t)
	// The "key" bucket's root: a leaf of plain keys (the fixture's key
	// bucket spans pages, so its root has its own page).
	f := testetcd.Must(Open(src, time.Second))(t)
	var keyRoot uint64
	_, err := f.Scan(nil)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	root := b[int64(m.Root)*int64(m.PageSize):]
	for i := range int(binary.LittleEndian.Uint16(root[10:])) {
		e := root[16+16*i:]
		pos, ksize := binary.LittleEndian.Uint32(e[4:]), binary.LittleEndian.Uint32(e[8:])
		if string(e[pos:pos+ksize]) == "key" {
			keyRoot = binary.LittleEndian.Uint64(e[pos+ksize:])
		}
	}
	if keyRoot == 0 {
		t.Fatal("the fixture's key bucket has no page of its own")
	}
	m.Root = keyRoot
	bad := filepath.Join(t.TempDir(), "root.db")
	b = append(append(m.page(0), m.page(1)...), b[2*int64(m.PageSize):]...)
	testetcd.WriteFile(t, bad, b)
	f = testetcd.Must(Open(bad, time.Second))(t)
	defer f.Close()
	if _, err := f.Scan(nil); !errors.Is(err, ErrIntegrity) || !strings.Contains(err.Error(), "not a bucket") {
		t.Fatalf("scan: %v, want %v naming an entry that is not a bucket", err, ErrIntegrity)
	}
}

// TestScanPartial: SkipBucket leaves a bucket's entries out and LastLeaf
// reads only a bucket's last leaf, whose last entry is bbolt's Last; the
// partial scan reads a few pages and reports no unreached page.
func TestScanPartial(t *testing.T) {
	path := fixture(t, false, 0)
	var wantLast []byte
	db, err := bolt.Open(path, 0o400, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	err = db.View(func(tx *bolt.Tx) error {
		k, _ := tx.Bucket([]byte("big")).Cursor().Last()
		wantLast = append([]byte(nil), k...)
		return nil
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	f, err := Open(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var top string
	var last []byte
	var bigEntries, others int
	pages, err := f.Scan(func(e Entry) error {
		if e.Depth == 0 {
			top = string(e.Key)
			if top == "big" {
				return LastLeaf
			}
			return SkipBucket
		}
		if top != "big" || string(e.Top) != top {
			others++
		}
		bigEntries++
		last = append(last[:0], e.Key...)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(last, wantLast) || others != 0 {
		t.Fatalf("last key %q (want %q), %d entries of skipped buckets or with the wrong Top", last, wantLast, others)
	}
	full, err := f.Scan(nil)
	if err != nil {
		t.Fatal(err)
	}
	if bigEntries == 0 || bigEntries > 200 || pages.Reachable > 10 || pages.Reachable >= full.Reachable {
		t.Fatalf("partial scan saw %d entries and %d pages (full scan: %d pages)", bigEntries, pages.Reachable, full.Reachable)
	}
}

// TestEntryTop: every entry below the root names its top-level bucket,
// nested buckets' entries included.
func TestEntryTop(t *testing.T) {
	f, err := Open(fixture(t, false, 0), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var cur string
	seen := map[string]int{}
	if _, err := f.Scan(func(e Entry) error {
		if e.Depth == 0 {
			if e.Top != nil {
				t.Fatalf("root entry %q has Top %q", e.Key, e.Top)
			}
			cur = string(e.Key)
			return nil
		}
		if string(e.Top) != cur {
			t.Fatalf("entry %q at depth %d: Top %q, want %q", e.Key, e.Depth, e.Top, cur)
		}
		seen[cur]++
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if seen["big"] == 0 || seen["nest"] < 3000 || seen["huge"] != 1 {
		t.Fatalf("entries per top-level bucket: %v", seen)
	}
}

// TestPageRun: the bytes PageRun hands over, per depth, are exactly every
// key followed by its value (a bucket's key alone) in scan order, on a
// fixture with inline and nested buckets, overflow values and deletes, and
// they arrive as page-long runs: a run per page, besides buckets.
func TestPageRun(t *testing.T) {
	for _, ps := range []int{0, 1024} {
		t.Run(fmt.Sprint("pagesize-", ps), func(t *testing.T) {
			f, err := Open(fixture(t, false, ps), 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			var want, got bytes.Buffer
			runs, pages, buckets := 0, 0, 0
			r := PageRun{Write: func(b []byte) { runs++; got.Write(b) }}
			if _, err := f.Scan(func(e Entry) error {
				if e.Last {
					pages++
				}
				if e.Bucket {
					buckets++
				}
				want.Write(e.Key)
				want.Write(e.Value)
				r.Add(e)
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			r.Flush()
			if !bytes.Equal(got.Bytes(), want.Bytes()) {
				t.Fatalf("runs hold %d bytes, the entries %d: they differ", got.Len(), want.Len())
			}
			if runs > pages+2*buckets { // a bucket: the run before it ends, its key alone
				t.Fatalf("%d runs for %d pages and %d buckets: runs are not joined", runs, pages, buckets)
			}
		})
	}
}

// patch is bytes to write at an offset of a file.
type patch struct {
	off  int64
	data []byte
}

// damage is one way to damage a fixture, and the words of Scan's problem.
type damage struct {
	name    string
	patches func() []patch
	want    string
}

// apply writes a copy of src with d's patches into dir.
func (d damage) apply(t *testing.T, src string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "bad.db")
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range d.patches() {
		copy(b[p.off:], p.data)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// treeDamages are damages of the trees of the fixture at src, each in one
// place: its meta page, the damages, and the leaf most of them touch.
func treeDamages(t *testing.T, src string) (Meta, []damage, page) {
	m, pages := pagesOf(t, src)
	find := func(ok func(page) bool) page {
		for _, p := range pages {
			if ok(p) {
				return p
			}
		}
		t.Fatal("the fixture has no such page")
		return page{}
	}
	byID := map[uint64]page{}
	for _, p := range pages {
		byID[p.id] = p
	}
	// A branch whose first child is a leaf: that leaf is surely
	// reachable, and its parent sets an upper bound for its keys.
	branch := find(func(p page) bool {
		c := byID[p.pgs0()]
		return p.flags == branchPageFlag && p.count >= 3 && c.flags == leafPageFlag && c.count >= 3
	})
	leaf := byID[branch.pgs[0]]
	overflowLeaf := find(func(p page) bool { return p.flags == leafPageFlag && p.overflow > 0 })
	u64 := func(v uint64) []byte { return binary.LittleEndian.AppendUint64(nil, v) }
	u32 := func(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }
	elem := func(p page, i int) int64 { return p.off + pageHeaderSize + int64(i)*elemSize }
	return m, []damage{
		{"key order in a leaf", func() []patch {
			// The first key's first byte becomes 0xff: above its successor.
			b := testetcd.Must(os.ReadFile(src))(t)
			pos := binary.LittleEndian.Uint32(b[elem(leaf, 0)+4:])
			return []patch{{elem(leaf, 0) + int64(pos), []byte{0xff}}}
		}, "is not above the previous key"},
		{"key order across pages", func() []patch {
			// The last key of the leaf goes above the parent's next key.
			b := testetcd.Must(os.ReadFile(src))(t)
			last := int(leaf.count) - 1
			pos := binary.LittleEndian.Uint32(b[elem(leaf, last)+4:])
			return []patch{{elem(leaf, last) + int64(pos), []byte{0xff}}}
		}, "is not below the next key"},
		{"two references to one page", func() []patch {
			return []patch{{elem(branch, 1) + 8, u64(branch.pgs[0])}}
		}, "multiple references"},
		{"child outside the file", func() []patch {
			return []patch{{elem(branch, 1) + 8, u64(m.Pgid + 10)}}
		}, "out of bounds"},
		{"leaf with a meta page's type", func() []patch {
			return []patch{{leaf.off + 8, []byte{metaPageFlag, 0}}}
		}, "invalid type: meta"},
		{"header names another page", func() []patch {
			return []patch{{leaf.off, u64(leaf.id + 1)}}
		}, "its header says it is page"},
		{"element points outside the page", func() []patch {
			return []patch{{elem(leaf, 1) + 4, u32(1 << 30)}}
		}, "points outside the page"},
		{"overflow past the high-water mark", func() []patch {
			return []patch{{overflowLeaf.off + 12, u32(uint32(m.Pgid))}}
		}, "pass the high-water mark"},
	}, leaf
}
