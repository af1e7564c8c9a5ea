package backup

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"filippo.io/age"
)

// The revision log (package pitr writes and replays it) is stored beside
// the backups as segments: logs/<first>-<last>-<nonce>/ holds the
// segment's data object, compressed and encrypted as a backup, and its
// manifest, written last. Revisions in names are zero-padded to 20 digits,
// so names sort by first revision. The nonce keeps two writers apart (an
// old active scheduler that has not yet noticed it lost the election):
// their segments may overlap, and a reader skips revisions it already has.

const (
	logPrefix   = "logs/"
	segmentData = "segment.log"
)

// ErrNotCovered: no full backup and log reach the revision or time asked.
var ErrNotCovered = errors.New("not covered by the backups and their log")

// Segment is the manifest of one piece of the revision log: every event of
// revisions First..Last, as the watch delivered them, or, with Gap, a
// record that the log does NOT cover First..Last (the watch was compacted,
// or the log could not keep up) and a full backup was taken after it.
// A segment with no events (Last = First-1) says the cluster wrote nothing
// from FirstTime to LastTime: it carries the log's reach in time.
type Segment struct {
	Name      string    `json:"name"` // logs/<first>-<last>-<nonce>/
	First     int64     `json:"first"`
	Last      int64     `json:"last"`
	FirstTime time.Time `json:"firstTime"` // the receive time of the first response held
	LastTime  time.Time `json:"lastTime"`  // the log knew the cluster was at Last until then
	Events    int64     `json:"events"`
	Leases    int64     `json:"leases,omitempty"` // lease records (ID and TTL) held
	Gap       bool      `json:"gap,omitempty"`
	GapReason string    `json:"gapReason,omitempty"`
	Writer    string    `json:"writer,omitempty"` // the instance that wrote it
	// ClusterID is the cluster the log followed (hex, as a backup's):
	// a window chains only segments of its backup's cluster, so a
	// cluster restored from the repository never continues the old
	// cluster's log with its own revisions.
	ClusterID string `json:"clusterId,omitempty"`

	Object       string `json:"object,omitempty"`
	Compression  string `json:"compression,omitempty"`
	Encryption   string `json:"encryption,omitempty"`
	Size         int64  `json:"size"`             // raw bytes
	SHA256       string `json:"sha256,omitempty"` // of the raw bytes
	StoredSize   int64  `json:"storedSize"`
	StoredSHA256 string `json:"storedSha256,omitempty"`
}

func segmentDir(first, last int64, nonce string) string {
	return fmt.Sprintf("%s%020d-%020d-%s/", logPrefix, first, last, nonce)
}

func (s Segment) objectName() string {
	return dataName(s.Name+segmentData, s.Compression, s.Encryption)
}

var segmentPattern = regexp.MustCompile(`^logs/([0-9]{20})-([0-9]{20})-([0-9a-f]{8})/$`)

// ParseSegment reads the segment manifest stored at name and checks it as
// ParseManifest checks a backup's: its place, its object's name, its
// revisions, sizes and hashes.
func ParseSegment(name string, r io.Reader) (Segment, error) {
	var s Segment
	if err := json.NewDecoder(io.LimitReader(r, maxManifestBytes)).Decode(&s); err != nil {
		return Segment{}, fmt.Errorf("%s: %w: not a log segment manifest: %w", name, ErrCorrupt, err)
	}
	bad := func(format string, args ...any) (Segment, error) {
		return Segment{}, fmt.Errorf("%s: %w: %s", name, ErrCorrupt, fmt.Sprintf(format, args...))
	}
	m := segmentPattern.FindStringSubmatch(s.Name)
	switch {
	case m == nil:
		return bad("segment name %q is not logs/<first>-<last>-<nonce>/", s.Name)
	case name != s.Name+manifestName:
		return bad("manifest of segment %q is not at %s", s.Name, s.Name+manifestName)
	case m[1] != fmt.Sprintf("%020d", s.First) || m[2] != fmt.Sprintf("%020d", s.Last):
		return bad("revisions %d..%d do not match its name", s.First, s.Last)
	case s.First < 1 || s.Last < s.First-1 || s.Events < 0 || s.Size < 0 || s.StoredSize < 0:
		return bad("revisions %d..%d, %d events: not a segment", s.First, s.Last, s.Events)
	case s.Gap:
		if s.Object != "" || s.Last < s.First {
			return bad("a gap record holds no data and covers at least one revision")
		}
		return s, nil
	case s.Compression != "zstd" && s.Compression != "none":
		return bad("compression %q (want zstd or none)", s.Compression)
	case s.Encryption != "" && s.Encryption != "age":
		return bad("encryption %q (want age or none)", s.Encryption)
	case s.Object != s.objectName():
		return bad("data object %q (want %s)", s.Object, s.objectName())
	case !isHash(s.SHA256) || !isHash(s.StoredSHA256):
		return bad("stored or raw sha256 is not a sha256")
	case s.Events < s.Last-s.First+1:
		return bad("%d events cannot cover revisions %d..%d (every revision has one)", s.Events, s.First, s.Last)
	}
	return s, nil
}

// SegmentOptions say how PutSegment stores the data.
type SegmentOptions struct {
	Compression string          // zstd (default) or none
	Recipients  []age.Recipient // encrypt to these when set
	// Uploaded, when set, is called with the segment being stored and
	// its stored bytes sent so far.
	Uploaded func(s Segment, n int64)
}

// PutSegment stores a segment: its data (the raw log records) first, its
// manifest last, so that a listing never shows a segment whose data is
// incomplete. seg gives the revisions, times, counts and writer; the rest
// is filled in. A failed upload is removed.
func (r *Repository) PutSegment(ctx context.Context, seg Segment, data io.Reader, opts SegmentOptions) (Segment, error) {
	if opts.Compression == "" {
		opts.Compression = "zstd"
	}
	if err := CheckCompression(opts.Compression); err != nil {
		return seg, err
	}
	seg.Name = segmentDir(seg.First, seg.Last, nonce())
	seg.Compression, seg.Encryption = opts.Compression, ""
	if len(opts.Recipients) > 0 {
		seg.Encryption = "age"
	}
	seg.Object = seg.objectName()
	var uploaded func(int64)
	if opts.Uploaded != nil {
		uploaded = func(n int64) { opts.Uploaded(seg, n) }
	}
	p, err := r.put(ctx, seg.Object, data, seg.Compression, opts.Recipients, uploaded, false)
	if err != nil {
		return seg, err
	}
	seg.SHA256, seg.Size, seg.StoredSHA256, seg.StoredSize = p.raw, p.rawSize, p.stored, p.storedSize
	if err := r.putJSON(ctx, seg.Name+manifestName, seg); err != nil {
		r.Store.Delete(context.WithoutCancel(ctx), seg.Object)
		return seg, err
	}
	return seg, nil
}

// PutGap records that the log does not cover revisions first..last.
func (r *Repository) PutGap(ctx context.Context, first, last int64, at time.Time, reason, writer, clusterID string) (Segment, error) {
	seg := Segment{Name: segmentDir(first, last, nonce()), First: first, Last: last, FirstTime: at, LastTime: at, Gap: true, GapReason: reason, Writer: writer, ClusterID: clusterID}
	return seg, r.putJSON(ctx, seg.Name+manifestName, seg)
}

func nonce() string {
	var b [4]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func (r *Repository) putJSON(ctx context.Context, name string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	b = append(b, '\n')
	return r.Store.Put(ctx, name, strings.NewReader(string(b)), int64(len(b)))
}

// Segments lists the log's complete segments and gap records, by first
// revision (then last).
func (r *Repository) Segments(ctx context.Context) ([]Segment, error) {
	objs, err := r.Store.List(ctx, logPrefix)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, o := range objs {
		if strings.HasSuffix(o.Name, "/"+manifestName) {
			names = append(names, o.Name)
		}
	}
	// Manifests are small and many: read them 8 at a time.
	out := make([]Segment, len(names))
	errs := make([]error, len(names))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i, name := range names {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			rc, err := r.Store.Get(ctx, name)
			if err != nil {
				errs[i] = err
				return
			}
			defer rc.Close()
			out[i], errs[i] = ParseSegment(name, rc)
			if errs[i] != nil {
				errs[i] = fmt.Errorf("%s: %w", r.Store, errs[i])
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	SortSegments(out)
	return out, nil
}

// SortSegments orders segments by first revision, then last, then time.
func SortSegments(segs []Segment) {
	sort.Slice(segs, func(i, j int) bool {
		a, b := segs[i], segs[j]
		if a.First != b.First {
			return a.First < b.First
		}
		if a.Last != b.Last {
			return a.Last < b.Last
		}
		return a.LastTime.Before(b.LastTime)
	})
}

// OpenSegment streams a segment's raw records, checked against its
// manifest as Open checks a backup (a mismatch is the reader's error at
// its end).
func (r *Repository) OpenSegment(ctx context.Context, s Segment, identities []age.Identity) (io.ReadCloser, error) {
	return r.openObject(ctx, objectRef{
		object: s.Object, compression: s.Compression, encryption: s.Encryption,
		storedSize: s.StoredSize, storedSHA256: s.StoredSHA256, size: s.Size, sha256: s.SHA256,
		id: "log segment " + strings.TrimSuffix(s.Name, "/"), what: "log segment " + s.Name, hashAhead: true,
	}, identities)
}

// Window is what a point-in-time restore can reach from one full backup:
// every revision from the backup's (From) to To, and every time from the
// backup's to ToTime, through the log's Segments (in replay order).
type Window struct {
	Backup   Manifest  `json:"-"`
	From     int64     `json:"from"`
	To       int64     `json:"to"`
	FromTime time.Time `json:"fromTime"`
	ToTime   time.Time `json:"toTime"`
	Segments []Segment `json:"-"`
}

// Reach returns the window of the full backup b through the segments
// (sorted by SortSegments): the longest unbroken run of revisions from
// b.Revision+1 on. Overlapping segments (two writers) chain as one; a
// gap record or a missing revision ends the window.
func Reach(b Manifest, segs []Segment) Window {
	w := Window{Backup: b, From: b.Revision, To: b.Revision, FromTime: b.Time, ToTime: b.Time}
	i := 0
	for {
		best := -1
		for ; i < len(segs) && segs[i].First <= w.To+1; i++ {
			s := segs[i]
			if s.Gap || s.Last < w.To || s.ClusterID != "" && b.ClusterID != "" && s.ClusterID != b.ClusterID {
				continue
			}
			if best < 0 || s.Last > segs[best].Last || s.Last == segs[best].Last && s.LastTime.After(segs[best].LastTime) {
				best = i
			}
		}
		if best < 0 {
			return w
		}
		s := segs[best]
		if s.Last == w.To && !s.LastTime.After(w.ToTime) {
			// No progress in revisions or time: look further (the
			// scan above already moved past it).
			if i >= len(segs) || segs[i].First > w.To+1 {
				return w
			}
			continue
		}
		w.Segments = append(w.Segments, s)
		w.To = s.Last
		if s.LastTime.After(w.ToTime) {
			w.ToTime = s.LastTime
		}
	}
}

// Windows returns every backup's window, oldest backup first.
func Windows(backups []Manifest, segs []Segment) []Window {
	out := make([]Window, len(backups))
	for i, b := range backups {
		out[i] = Reach(b, segs)
	}
	return out
}

// ForRevision picks the window that reaches rev from the newest full
// backup at or below it (the shortest replay).
func ForRevision(windows []Window, segs []Segment, rev int64) (Window, error) {
	var best *Window
	for i := range windows {
		w := &windows[i]
		if w.From <= rev && rev <= w.To && (best == nil || w.From > best.From) {
			best = w
		}
	}
	if best == nil {
		return Window{}, notCovered(fmt.Sprintf("revision %d", rev), windows, segs)
	}
	return *best, nil
}

// ForTime picks the window that reaches t from the newest full backup
// taken at or before it.
func ForTime(windows []Window, segs []Segment, t time.Time) (Window, error) {
	var best *Window
	for i := range windows {
		w := &windows[i]
		if !w.FromTime.After(t) && !t.After(w.ToTime) && (best == nil || w.From > best.From) {
			best = w
		}
	}
	if best == nil {
		return Window{}, notCovered("time "+t.UTC().Format(time.RFC3339), windows, segs)
	}
	return *best, nil
}

// notCovered names what can be reached instead, and the recorded gaps.
func notCovered(what string, windows []Window, segs []Segment) error {
	if len(windows) == 0 {
		return fmt.Errorf("%w: %s: the repository holds no full backup", ErrNotCovered, what)
	}
	var reach []string
	for _, w := range windows {
		reach = append(reach, fmt.Sprintf("%d..%d (%s..%s, backup %s)", w.From, w.To,
			w.FromTime.UTC().Format(time.RFC3339), w.ToTime.UTC().Format(time.RFC3339), w.Backup.ID))
	}
	msg := fmt.Sprintf("%s; reachable revisions: %s", what, strings.Join(reach, ", "))
	var gaps []string
	for _, s := range segs {
		if s.Gap {
			gaps = append(gaps, fmt.Sprintf("%d..%d (%s)", s.First, s.Last, s.GapReason))
		}
	}
	if len(gaps) > 0 {
		msg += "; the log records gaps at " + strings.Join(gaps, ", ")
	}
	return fmt.Errorf("%w: %s", ErrNotCovered, msg)
}

// segmentLeftovers are data objects under logs/ without a manifest, older
// than before: uploads that never finished.
func (r *Repository) segmentLeftovers(ctx context.Context, before time.Time) ([]string, error) {
	objs, err := r.Store.List(ctx, logPrefix)
	if err != nil {
		return nil, err
	}
	complete := map[string]bool{}
	for _, o := range objs {
		if dir, ok := strings.CutSuffix(o.Name, manifestName); ok {
			complete[dir] = true
		}
	}
	var out []string
	for _, o := range objs {
		i := strings.LastIndexByte(o.Name, '/')
		if !complete[o.Name[:i+1]] && o.ModTime.Before(before) {
			out = append(out, o.Name)
		}
	}
	return out, nil
}

// unneededSegments are the segments (and gap records) that extend only
// backups older than the oldest kept one: every kept backup's window
// starts above their last revision.
func unneededSegments(kept []Manifest, segs []Segment) []Segment {
	if len(kept) == 0 {
		return nil
	}
	oldest := kept[0].Revision
	for _, b := range kept {
		oldest = min(oldest, b.Revision)
	}
	var out []Segment
	for _, s := range segs {
		if s.Last <= oldest && !(s.Last == oldest && s.Last < s.First) {
			out = append(out, s)
		}
	}
	return out
}

// removeSegment deletes a segment: its manifest first, so that it is never
// listed without its data.
func (r *Repository) removeSegment(ctx context.Context, s Segment) error {
	if err := r.Store.Delete(ctx, s.Name+manifestName); err != nil {
		return err
	}
	if s.Object != "" {
		return r.Store.Delete(ctx, s.Object)
	}
	return nil
}
