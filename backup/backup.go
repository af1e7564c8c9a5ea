// Package backup keeps etcd snapshots in a repository (a local directory or
// an S3 bucket, package repo): each backup is one data object, compressed
// with zstd and optionally encrypted with age, and a manifest written last,
// so a listing never shows a backup whose data is incomplete. Every read
// checks the sha256 of the stored object and of the raw snapshot against
// the manifest.
package backup

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"filippo.io/age"
	"github.com/klauspost/compress/zstd"

	"github.com/etcdkit/etcdkit/cluster"
	"github.com/etcdkit/etcdkit/internal/etcdfmt"
	"github.com/etcdkit/etcdkit/repo"
	"github.com/etcdkit/etcdkit/save"
)

// Errors a caller maps to exit codes.
var (
	// ErrCorrupt: a stored object does not match its manifest.
	ErrCorrupt = errors.New("backup damaged")
	// ErrIdentity: an encrypted backup and no identity that opens it.
	ErrIdentity = errors.New("cannot decrypt the backup")
	// ErrNoBackup: no backup with that ID (or none at all).
	ErrNoBackup = errors.New("no such backup")
)

const (
	prefix       = "backups/"
	manifestName = "manifest.json"
)

// Manifest describes one backup: the snapshot's own manifest plus how it
// is stored.
type Manifest struct {
	ID string `json:"id"`
	save.Manifest
	RawSHA256    string     `json:"rawSha256"` // of the whole snapshot file
	Object       string     `json:"object"`
	Compression  string     `json:"compression"`          // zstd or none
	Encryption   string     `json:"encryption,omitempty"` // age
	StoredSize   int64      `json:"storedSize"`
	StoredSHA256 string     `json:"storedSha256"`
	Verified     bool       `json:"verified"`
	VerifiedAt   *time.Time `json:"verifiedAt,omitempty"`
	// Attachments are files a restore also needs, stored with the backup.
	Attachments []Attachment `json:"attachments,omitempty"`
	// Consolidated says the backup was built offline from an earlier
	// one and the revision log (etcdkit backup consolidate).
	Consolidated *Consolidation `json:"consolidated,omitempty"`
}

// Consolidation is where a consolidated backup comes from.
type Consolidation struct {
	From         string `json:"from"` // the full backup's ID
	FromRevision int64  `json:"fromRevision"`
	Segments     int    `json:"segments"`
	Events       int64  `json:"events"`
}

func (m Manifest) dir() string { return prefix + m.ID + "/" }

// objectName is where a backup's data lives: backups/<id>/snapshot.db,
// with .zst when compressed and .age when encrypted. Nothing else is.
func (m Manifest) objectName() string {
	return dataName(m.dir()+"snapshot.db", m.Compression, m.Encryption)
}

// dataName is a stored object's name: base, with .zst when compressed and
// .age when encrypted (backups and log segments alike).
func dataName(base, compression, encryption string) string {
	if compression == "zstd" {
		base += ".zst"
	}
	if encryption == "age" {
		base += ".age"
	}
	return base
}

// idPattern is the form of every backup ID: the snapshot's UTC time and a
// random suffix.
var idPattern = regexp.MustCompile(`^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{6}$`)

// maxManifestBytes bounds what a manifest read may take: a real one is
// well under 2 KiB.
const maxManifestBytes = 1 << 20

// ParseManifest reads the manifest stored at name. A repository is outside
// input (a shared bucket, a copied directory), so everything a command
// acts on is checked here, on every read: the ID's form and that the
// manifest lies in its own backup's directory, the data object's name
// (exactly objectName, so no manifest can make a delete, copy or restore
// touch another path), the compression and encryption, sizes and hashes.
func ParseManifest(name string, r io.Reader) (Manifest, error) {
	var m Manifest
	dec := json.NewDecoder(io.LimitReader(r, maxManifestBytes))
	if err := dec.Decode(&m); err != nil {
		return Manifest{}, fmt.Errorf("%s: %w: not a manifest: %w", name, ErrCorrupt, err)
	}
	bad := func(format string, args ...any) (Manifest, error) {
		return Manifest{}, fmt.Errorf("%s: %w: %s", name, ErrCorrupt, fmt.Sprintf(format, args...))
	}
	switch {
	case !idPattern.MatchString(m.ID):
		return bad("id %q is not a backup id (YYYYMMDDTHHMMSSZ-xxxxxx)", m.ID)
	case name != m.dir()+manifestName:
		return bad("manifest of backup %q is not at %s", m.ID, m.dir()+manifestName)
	case m.Compression != "zstd" && m.Compression != "none":
		return bad("compression %q (want zstd or none)", m.Compression)
	case m.Encryption != "" && m.Encryption != "age":
		return bad("encryption %q (want age or none)", m.Encryption)
	case m.Object != m.objectName():
		return bad("data object %q (want %s)", m.Object, m.objectName())
	case m.Size < 0 || m.StoredSize < 0 || m.Revision < 0:
		return bad("negative size or revision")
	case !isHash(m.StoredSHA256) || !isHash(m.RawSHA256):
		return bad("stored or raw sha256 is not a sha256")
	}
	seen := map[string]bool{}
	for i, a := range m.Attachments {
		switch {
		case checkAttachmentName(a.Name) != nil || seen[a.Name]:
			return bad("attachment %q: not a file name, or twice", a.Name)
		case a.Object != m.attachmentObject(i, a.Name):
			return bad("attachment object %q (want %s)", a.Object, m.attachmentObject(i, a.Name))
		case a.Size < 0 || a.StoredSize < 0 || !isHash(a.SHA256) || !isHash(a.StoredSHA256) || a.Mode&^0o777 != 0:
			return bad("attachment %q: bad size, sha256 or mode", a.Name)
		}
		seen[a.Name] = true
	}
	return m, nil
}

// isHash reports whether h is a sha256 in hex, as manifests hold them.
func isHash(h string) bool {
	b, err := hex.DecodeString(h)
	return err == nil && len(b) == sha256.Size
}

// Before orders backups by time, then revision (never by name).
func (m Manifest) Before(o Manifest) bool {
	if !m.Time.Equal(o.Time) {
		return m.Time.Before(o.Time)
	}
	return m.Revision < o.Revision
}

// Repository is a backup repository.
type Repository struct {
	Store repo.Store
}

// Open opens the repository at a URL (see repo.Open).
func Open(ctx context.Context, url string) (*Repository, error) {
	s, err := repo.Open(ctx, url)
	if err != nil {
		return nil, err
	}
	return &Repository{Store: s}, nil
}

// CreateOptions tune Create.
type CreateOptions struct {
	Compression string          // "zstd" (default) or "none"
	Recipients  []age.Recipient // encrypt to these when set
	TempDir     string          // where a consolidation builds its db (default: the system's)
	// Verify re-reads the stored object after the upload and checks it.
	Verify   bool
	Progress func(done, total int64)
	// Uploaded, when set, is called with the bytes stored so far.
	Uploaded func(n int64)
	// Attachments are files stored with the backup, encrypted to the
	// Recipients; without recipients only with AllowPlaintextAttachments.
	Attachments               []string
	AllowPlaintextAttachments bool
	// RateLimit caps the snapshot stream in bytes per second (0: none);
	// SkipMemberHash does not ask the member for its HashKV (save.Options).
	RateLimit      int64
	SkipMemberHash bool
}

// CheckCompression refuses a compression Create does not know.
func CheckCompression(name string) error {
	if name != "zstd" && name != "none" {
		return fmt.Errorf("compression %q: use zstd or none", name)
	}
	return nil
}

// Create takes a snapshot of the cluster, stores it and writes its
// manifest last.
func (r *Repository) Create(ctx context.Context, c *cluster.Cluster, opts CreateOptions) (Manifest, error) {
	if opts.Compression == "" {
		opts.Compression = "zstd"
	}
	if err := CheckCompression(opts.Compression); err != nil {
		return Manifest{}, err
	}
	if err := CheckAttachments(opts); err != nil {
		return Manifest{}, err
	}
	var rnd [3]byte
	rand.Read(rnd[:])
	m := Manifest{ID: time.Now().UTC().Format("20060102T150405Z") + "-" + hex.EncodeToString(rnd[:]), Compression: opts.Compression}
	if len(opts.Recipients) > 0 {
		m.Encryption = "age"
	}
	m.Object = m.objectName()
	// One pass, nothing on disk: the snapshot streams into the upload
	// (zstd, age, the store) while its trailer and facts are read on the
	// way; the upload ends while the member is asked for its HashKV; the
	// manifest, written last, needs both.
	pr, pw := io.Pipe()
	putDone := make(chan error, 1)
	var rawSize int64
	go func() {
		p, err := r.put(ctx, m.Object, pr, m.Compression, opts.Recipients, opts.Uploaded, true)
		m.StoredSHA256, m.StoredSize, rawSize = p.stored, p.storedSize, p.rawSize
		pr.CloseWithError(err)
		putDone <- err
	}()
	uploadErr := sync.OnceValue(func() error { return <-putDone })
	sm, err := save.Stream(ctx, c, pw, save.Options{Progress: opts.Progress, RateLimit: opts.RateLimit, SkipMemberHash: opts.SkipMemberHash, Done: func() error {
		pw.Close() // the whole snapshot went through
		return uploadErr()
	}})
	if err != nil {
		pw.CloseWithError(err)
		if uploadErr() == nil {
			r.Store.Delete(context.WithoutCancel(ctx), m.Object)
		}
		return m, err
	}
	m.Manifest, m.RawSHA256 = sm, sm.FileSHA256
	if rawSize != sm.Size {
		r.Store.Delete(context.WithoutCancel(ctx), m.Object)
		return m, fmt.Errorf("%d bytes stored, the snapshot has %d", rawSize, sm.Size)
	}
	if err := r.attach(ctx, &m, opts.Attachments, opts.Recipients); err != nil {
		r.Store.Delete(context.WithoutCancel(ctx), m.Object)
		return m, err
	}
	if opts.Verify {
		if err := r.verifyStored(ctx, &m); err != nil {
			return m, err
		}
	}
	return m, r.writeManifest(ctx, m)
}

// StoreFile stores a snapshot file made offline (a consolidation) as a
// backup: sm describes it (revision, time, size, sha256), from says what
// it was built from. The stored object is re-read and checked, and the
// manifest written last, as Create does.
func (r *Repository) StoreFile(ctx context.Context, path string, sm save.Manifest, from *Consolidation, opts CreateOptions) (Manifest, error) {
	if opts.Compression == "" {
		opts.Compression = "zstd"
	}
	if err := CheckCompression(opts.Compression); err != nil {
		return Manifest{}, err
	}
	f, err := os.Open(path)
	if err != nil {
		return Manifest{}, err
	}
	defer f.Close()
	m := Manifest{ID: sm.Time.UTC().Format("20060102T150405Z") + "-" + nonce()[:6], Compression: opts.Compression, Manifest: sm, Consolidated: from}
	if len(opts.Recipients) > 0 {
		m.Encryption = "age"
	}
	m.Object = m.objectName()
	p, err := r.put(ctx, m.Object, f, m.Compression, opts.Recipients, opts.Uploaded, false)
	if err != nil {
		return m, err
	}
	m.RawSHA256, m.StoredSHA256, m.StoredSize = p.raw, p.stored, p.storedSize
	if p.rawSize != sm.Size {
		r.Store.Delete(context.WithoutCancel(ctx), m.Object)
		return m, fmt.Errorf("%s: %d bytes stored, the snapshot has %d", path, p.rawSize, sm.Size)
	}
	if err := r.verifyStored(ctx, &m); err != nil {
		r.Store.Delete(context.WithoutCancel(ctx), m.Object)
		return m, err
	}
	return m, r.writeManifest(ctx, m)
}

// stored is what put wrote: the sha256 of the raw and of the stored bytes.
type stored struct {
	raw, stored         string
	rawSize, storedSize int64
}

// put streams src through compression and age into the object, hashing
// the raw and the stored bytes on the way; a failed upload is removed.
// A caller that hashes the raw bytes itself (Create: etcd's trailer check
// already hashes them) passes rawHashed, and the raw sha256 is left empty.
func (r *Repository) put(ctx context.Context, object string, src io.Reader, compression string, recipients []age.Recipient, uploaded func(int64), rawHashed bool) (stored, error) {
	pr, pw := io.Pipe()
	rawHash, storedHash := &countingHash{h: sha256.New()}, &countingHash{h: sha256.New(), report: uploaded}
	if rawHashed {
		rawHash.h = nil
	}
	go func() {
		pw.CloseWithError(encode(io.MultiWriter(pw, storedHash), io.TeeReader(src, rawHash), compression, recipients))
	}()
	if err := r.Store.Put(ctx, object, pr, -1); err != nil {
		pr.CloseWithError(err)
		r.Store.Delete(context.WithoutCancel(ctx), object)
		return stored{}, err
	}
	st := stored{
		rawSize: rawHash.n,
		stored:  hex.EncodeToString(storedHash.h.Sum(nil)), storedSize: storedHash.n,
	}
	if rawHash.h != nil {
		st.raw = hex.EncodeToString(rawHash.h.Sum(nil))
	}
	return st, nil
}

// encode writes src to dst compressed and encrypted as asked.
func encode(dst io.Writer, src io.Reader, compression string, recipients []age.Recipient) error {
	w := io.WriteCloser(nopCloser{dst})
	if len(recipients) > 0 {
		aw, err := age.Encrypt(dst, recipients...)
		if err != nil {
			return err
		}
		w = aw
	}
	inner := w
	if compression == "zstd" {
		// One encoder goroutine with a 4 MiB window: the stream is
		// compressed as it arrives, a core is left to the snapshot and
		// the checks, and the encoder holds about 15 MiB instead of 30.
		zw, err := zstd.NewWriter(w, zstd.WithEncoderConcurrency(1), zstd.WithWindowSize(4<<20))
		if err != nil {
			return err
		}
		inner = zw
	}
	if _, err := io.Copy(inner, src); err != nil {
		return err
	}
	if inner != w {
		if err := inner.Close(); err != nil {
			return err
		}
	}
	return w.Close()
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

type countingHash struct {
	h      hash.Hash
	n      int64
	report func(int64)
}

func (c *countingHash) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	if c.report != nil {
		c.report(c.n)
	}
	if c.h == nil {
		return len(p), nil
	}
	return c.h.Write(p)
}

func (r *Repository) writeManifest(ctx context.Context, m Manifest) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	return r.Store.Put(ctx, m.dir()+manifestName, strings.NewReader(string(b)+"\n"), int64(len(b)+1))
}

// List returns the repository's complete backups, oldest first.
func (r *Repository) List(ctx context.Context) ([]Manifest, error) {
	objs, err := r.Store.List(ctx, prefix)
	if err != nil {
		return nil, err
	}
	var out []Manifest
	for _, o := range objs {
		if !strings.HasSuffix(o.Name, "/"+manifestName) {
			continue
		}
		m, err := r.readManifest(ctx, o.Name)
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Before(out[j]) })
	return out, nil
}

func (r *Repository) readManifest(ctx context.Context, name string) (Manifest, error) {
	rc, err := r.Store.Get(ctx, name)
	if err != nil {
		return Manifest{}, err
	}
	defer rc.Close()
	m, err := ParseManifest(name, rc)
	if err != nil {
		return Manifest{}, fmt.Errorf("%s: %w", r.Store, err)
	}
	return m, nil
}

// Find returns the backup with this ID, or the newest for "latest".
func (r *Repository) Find(ctx context.Context, id string) (Manifest, error) {
	all, err := r.List(ctx)
	if err != nil {
		return Manifest{}, err
	}
	if id == "latest" || id == "" {
		if len(all) == 0 {
			return Manifest{}, fmt.Errorf("%w: %s holds no backup", ErrNoBackup, r.Store)
		}
		return all[len(all)-1], nil
	}
	for _, m := range all {
		if m.ID == id {
			return m, nil
		}
	}
	return Manifest{}, fmt.Errorf("%w %q in %s", ErrNoBackup, id, r.Store)
}

// Open streams the raw snapshot of a backup: download, decrypt,
// decompress. The stored object's sha256 and size are checked when it has
// been read to its end, the raw snapshot's when the returned reader
// reaches its end: a mismatch is the reader's error instead of io.EOF, so
// a consumer that commits only at EOF (restore) never commits bad data.
func (r *Repository) Open(ctx context.Context, m Manifest, identities []age.Identity) (io.ReadCloser, error) {
	return r.openObject(ctx, objectRef{
		object: m.Object, compression: m.Compression, encryption: m.Encryption,
		storedSize: m.StoredSize, storedSHA256: m.StoredSHA256, size: m.Size, sha256: m.RawSHA256,
		id: m.ID, what: "snapshot of " + m.ID,
	}, identities)
}

// OpenForRestore is Open for a consumer that hashes the snapshot's db
// bytes itself (a restore checks them against the trailer): the raw
// stream's own sha256 is left out, and the returned hash — the manifest's
// record of the db bytes, the trailer's value — must be what the consumer
// computes before it commits anything. The stored object's sha256 and the
// raw size are still checked at the end. A backup whose manifest lacks
// that hash (or a snapshot without a trailer) is read as Open reads it,
// and the returned hash is empty.
func (r *Repository) OpenForRestore(ctx context.Context, m Manifest, identities []age.Identity) (io.ReadCloser, string, error) {
	if m.SHA256 == "" || !isHash(m.SHA256) || !etcdfmt.HasSnapshotTrailer(m.Size) {
		rc, err := r.Open(ctx, m, identities)
		return rc, "", err
	}
	rc, err := r.openObject(ctx, objectRef{
		object: m.Object, compression: m.Compression, encryption: m.Encryption,
		storedSize: m.StoredSize, storedSHA256: m.StoredSHA256, size: m.Size, sha256: m.RawSHA256,
		id: m.ID, what: "snapshot of " + m.ID, sizeOnly: true,
	}, identities)
	return rc, m.SHA256, err
}

// objectRef is what a manifest says of one stored object: how it is
// stored and what its stored and raw bytes hash to.
type objectRef struct {
	object, compression, encryption string
	storedSize                      int64
	storedSHA256                    string
	size                            int64
	sha256                          string
	id, what                        string // for messages: the backup (or segment) and the content
	hashAhead                       bool   // hash the raw bytes in the read-ahead goroutine
	sizeOnly                        bool   // check the raw size, not its hash (OpenForRestore)
}

// openObject streams the raw content of a stored object, checked as Open
// describes.
func (r *Repository) openObject(ctx context.Context, ref objectRef, identities []age.Identity) (io.ReadCloser, error) {
	rc, err := r.Store.Get(ctx, ref.object)
	if err != nil {
		return nil, err
	}
	stored := storedCheck(ref.object, ref.storedSHA256, ref.storedSize)(rc)
	var plain io.Reader = stored
	if ref.encryption == "age" {
		if len(identities) == 0 {
			rc.Close()
			return nil, fmt.Errorf("%w %s: it is encrypted with age; pass --identity FILE", ErrIdentity, ref.id)
		}
		d, err := age.Decrypt(stored, identities...)
		if err != nil {
			rc.Close()
			var noMatch *age.NoIdentityMatchError
			if errors.Is(err, age.ErrIncorrectIdentity) || errors.As(err, &noMatch) {
				return nil, fmt.Errorf("%w %s: none of the identities matches its recipients", ErrIdentity, ref.id)
			}
			return nil, fmt.Errorf("%w: %s: %w", ErrCorrupt, ref.id, err)
		}
		plain = d
	}
	var zr *zstd.Decoder
	if ref.compression == "zstd" {
		if zr, err = getDecoder(plain); err != nil {
			rc.Close()
			return nil, err
		}
		plain = zr
	}
	// Download, age and zstd run one core ahead of the reader, and with
	// hashAhead the raw hash too (its verdict arrives as the stream's
	// end): a restore hashes the snapshot again itself (its trailer) on
	// its own cores, a replay of the log does not.
	var out io.Reader
	var ra *readAhead
	if ref.hashAhead {
		ra = newReadAhead(&checkedReader{r: plain, h: sha256.New(), want: ref.sha256, size: ref.size, what: ref.what, then: stored.drain}, 4, 1<<20)
		out = ra
	} else {
		ra = newReadAhead(plain, 4, 1<<20)
		c := &checkedReader{r: ra, h: sha256.New(), want: ref.sha256, size: ref.size, what: ref.what, then: stored.drain}
		if ref.sizeOnly {
			c.h = nil
		}
		out = c
	}
	return &backupReader{raw: out, close: func() error {
		ra.Close()
		err := rc.Close()
		ra.wait() // its read of zr returned: zr may be reused
		if zr != nil {
			putDecoder(zr)
		}
		return err
	}, id: ref.id}, nil
}

// decoders are zstd decoders between two objects: a replay opens one
// segment after another, and a decoder's window is megabytes.
var decoders sync.Pool

func getDecoder(r io.Reader) (*zstd.Decoder, error) {
	if d, ok := decoders.Get().(*zstd.Decoder); ok {
		if err := d.Reset(r); err == nil {
			return d, nil
		}
		d.Close()
	}
	return zstd.NewReader(r, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true))
}

// putDecoder keeps a decoder for the next object (its input released).
func putDecoder(d *zstd.Decoder) {
	if d.Reset(nil) == nil {
		decoders.Put(d)
		return
	}
	d.Close()
}

type backupReader struct {
	raw   io.Reader
	close func() error
	id    string
}

func (b *backupReader) Read(p []byte) (int, error) {
	n, err := b.raw.Read(p)
	if err != nil && err != io.EOF && !errors.Is(err, ErrCorrupt) {
		err = fmt.Errorf("%w: %s: %w", ErrCorrupt, b.id, err)
	}
	return n, err
}

func (b *backupReader) Close() error { return b.close() }

// checkedReader hashes what it reads and, at the end, compares the hash
// and the size with the manifest's (only the size when h is nil: the
// consumer checks the content's hash itself).
type checkedReader struct {
	r    io.Reader
	h    hash.Hash
	n    int64
	want string
	size int64
	what string
	then func() error // runs at EOF before the check (drains an outer reader)
	err  error
}

func (c *checkedReader) Read(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	n, err := c.r.Read(p)
	if c.h != nil {
		c.h.Write(p[:n])
	}
	c.n += int64(n)
	if err == io.EOF {
		if c.then != nil {
			if derr := c.then(); derr != nil {
				err = derr
			}
		}
		switch {
		case err != io.EOF:
		case c.h == nil:
			if c.n != c.size {
				err = fmt.Errorf("%w: %s: %d bytes, the manifest says %d bytes", ErrCorrupt, c.what, c.n, c.size)
			}
		default:
			if got := hex.EncodeToString(c.h.Sum(nil)); got != c.want || c.n != c.size {
				err = fmt.Errorf("%w: %s: sha256 %s and %d bytes, the manifest says %s and %d bytes", ErrCorrupt, c.what, got, c.n, c.want, c.size)
			}
		}
		c.err = err
	}
	return n, err
}

// storedCheck checks a stored object (a backup's, a segment's) against its
// manifest's sha256 and size as it is read.
func storedCheck(object, want string, size int64) func(io.Reader) *checkedReader {
	return func(r io.Reader) *checkedReader {
		return &checkedReader{r: r, h: sha256.New(), want: want, size: size, what: "stored object " + object}
	}
}

// storedReader checks a backup's stored object as it is read.
func storedReader(r io.Reader, m Manifest) *checkedReader {
	return storedCheck(m.Object, m.StoredSHA256, m.StoredSize)(r)
}

// drain reads the rest of the stream (a decompressor may stop before the
// end of its input) so that the check at EOF covers every byte.
func (c *checkedReader) drain() error {
	_, err := io.Copy(io.Discard, c)
	return err
}
