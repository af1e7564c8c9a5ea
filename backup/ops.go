package backup

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"filippo.io/age"

	"github.com/etcdkit/etcdkit/internal/etcdfmt"
)

// verifyStored re-reads the stored object and checks its sha256 and size
// against the manifest, then marks it verified.
func (r *Repository) verifyStored(ctx context.Context, m *Manifest) error {
	rc, err := r.Store.Get(ctx, m.Object)
	if err != nil {
		return err
	}
	defer rc.Close()
	c := storedReader(rc, *m)
	if _, err := io.Copy(io.Discard, c); err != nil {
		return err
	}
	for _, a := range m.Attachments {
		if err := r.copyStored(ctx, a.Object, attachmentReader(a), nil); err != nil {
			return err
		}
	}
	now := time.Now().UTC()
	m.Verified, m.VerifiedAt = true, &now
	return nil
}

// CheckResult is the outcome of checking one backup.
type CheckResult struct {
	ID string `json:"id"`
	OK bool   `json:"ok"`
	// Content says how deep the check went: "snapshot" (decrypted,
	// decompressed, raw sha256 and the snapshot's own trailer checked) or
	// "stored object" (encrypted and no identity given).
	Content string `json:"content"`
	Error   string `json:"error,omitempty"`
}

// Check re-reads backups (all when id is "") and verifies them: the
// stored object's sha256, and with the identities for encrypted ones the
// raw snapshot's sha256 and its trailer. A backup that passes is marked
// verified in its manifest.
func (r *Repository) Check(ctx context.Context, id string, identities []age.Identity) ([]CheckResult, error) {
	var todo []Manifest
	if id != "" {
		m, err := r.Find(ctx, id)
		if err != nil {
			return nil, err
		}
		todo = []Manifest{m}
	} else {
		all, err := r.List(ctx)
		if err != nil {
			return nil, err
		}
		todo = all
	}
	var out []CheckResult
	var firstErr error
	for _, m := range todo {
		res := CheckResult{ID: m.ID, Content: "snapshot"}
		var err error
		if m.Encryption != "" && len(identities) == 0 {
			res.Content = "stored object"
			err = r.verifyStored(ctx, &m)
		} else {
			err = r.checkContent(ctx, &m, identities)
		}
		if err == nil {
			err = r.writeManifest(ctx, m)
		}
		out = append(out, res.outcome(err, &firstErr))
	}
	if id == "" {
		segs, err := r.checkSegments(ctx, identities)
		out = append(out, segs...)
		if firstErr == nil {
			firstErr = err
		}
	}
	return out, firstErr
}

// outcome records err (nil: the check passed) and keeps the first error.
func (res CheckResult) outcome(err error, first *error) CheckResult {
	if err != nil {
		res.Error = err.Error()
		if *first == nil {
			*first = err
		}
		return res
	}
	res.OK = true
	return res
}

// checkSegments re-reads every log segment: its stored object's sha256,
// and when it can be decrypted (or is not encrypted) its raw sha256 too.
func (r *Repository) checkSegments(ctx context.Context, identities []age.Identity) ([]CheckResult, error) {
	segs, err := r.Segments(ctx)
	if err != nil {
		return nil, err
	}
	var out []CheckResult
	var firstErr error
	for _, s := range segs {
		if s.Gap {
			continue
		}
		res := CheckResult{ID: strings.TrimSuffix(s.Name, "/"), Content: "log segment"}
		if s.Encryption != "" && len(identities) == 0 {
			res.Content = "log segment (stored object)"
			err = r.copyStored(ctx, s.Object, segmentStored(s), nil)
		} else {
			var rc io.ReadCloser
			if rc, err = r.OpenSegment(ctx, s, identities); err == nil {
				_, err = io.Copy(io.Discard, rc)
				rc.Close()
			}
		}
		out = append(out, res.outcome(err, &firstErr))
	}
	return out, firstErr
}

// segmentStored checks a segment's stored object as it is read.
func segmentStored(s Segment) func(io.Reader) *checkedReader {
	return storedCheck(s.Object, s.StoredSHA256, s.StoredSize)
}

func (r *Repository) checkContent(ctx context.Context, m *Manifest, identities []age.Identity) error {
	rc, err := r.Open(ctx, *m, identities)
	if err != nil {
		return err
	}
	defer rc.Close()
	tw := etcdfmt.NewTrailerWriter()
	if _, err := io.Copy(tw, rc); err != nil {
		return err
	}
	if _, err := tw.Check(); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrCorrupt, m.ID, err)
	}
	now := time.Now().UTC()
	m.Verified, m.VerifiedAt = true, &now
	return nil
}

// Delete removes a backup: its manifest first, so that it is never listed
// without its data, then its data.
func (r *Repository) Delete(ctx context.Context, id string) (Manifest, error) {
	m, err := r.Find(ctx, id)
	if err != nil {
		return m, err
	}
	return m, r.remove(ctx, m)
}

func (r *Repository) remove(ctx context.Context, m Manifest) error {
	if err := r.Store.Delete(ctx, m.dir()+manifestName); err != nil {
		return err
	}
	if err := r.Store.Delete(ctx, m.Object); err != nil {
		return err
	}
	return r.removeAttachments(ctx, m)
}

// attachmentReader checks an attachment's stored object as it is read.
func attachmentReader(a Attachment) func(io.Reader) *checkedReader {
	return func(rc io.Reader) *checkedReader {
		return &checkedReader{r: rc, h: sha256.New(), want: a.StoredSHA256, size: a.StoredSize, what: "stored attachment " + a.Object}
	}
}

// copyStored reads an object through its check, into dst's store when dst
// is set (a copy to a second site), else only to check it.
func (r *Repository) copyStored(ctx context.Context, object string, check func(io.Reader) *checkedReader, dst *Repository) error {
	rc, err := r.Store.Get(ctx, object)
	if err != nil {
		return err
	}
	defer rc.Close()
	c := check(rc)
	if dst == nil {
		_, err = io.Copy(io.Discard, c)
		return err
	}
	err = dst.Store.Put(ctx, object, c, c.size)
	if err == nil && c.err != io.EOF && c.n == c.size {
		// Put stopped reading at the declared size; finish the check.
		_, err = io.Copy(io.Discard, c)
	}
	if err != nil {
		dst.Store.Delete(context.WithoutCancel(ctx), object)
	}
	return err
}

// CopyTo copies the backups dst lacks into dst (a second site): the data
// object streamed and checked against the manifest, then the manifest.
func (r *Repository) CopyTo(ctx context.Context, dst *Repository) ([]Manifest, error) {
	todo, err := lacking(ctx, r.List, dst.List, func(m Manifest) string { return m.ID })
	if err != nil {
		return nil, err
	}
	var copied []Manifest
	for _, m := range todo {
		err := r.copyStored(ctx, m.Object, func(rc io.Reader) *checkedReader { return storedReader(rc, m) }, dst)
		for _, a := range m.Attachments {
			if err == nil {
				err = r.copyStored(ctx, a.Object, attachmentReader(a), dst)
			}
		}
		if err != nil {
			dst.Store.Delete(context.WithoutCancel(ctx), m.Object)
			dst.removeAttachments(ctx, m)
			if !errors.Is(err, ErrCorrupt) {
				err = fmt.Errorf("copy %s: %w", m.ID, err)
			}
			return copied, err
		}
		if err := dst.writeManifest(ctx, m); err != nil {
			return copied, err
		}
		copied = append(copied, m)
	}
	return copied, nil
}

// CopySegmentsTo copies the log segments (and gap records) dst lacks into
// dst, as CopyTo copies backups: the data checked against its manifest,
// the manifest last. It returns the names copied.
func (r *Repository) CopySegmentsTo(ctx context.Context, dst *Repository) ([]string, error) {
	todo, err := lacking(ctx, r.Segments, dst.Segments, func(s Segment) string { return s.Name })
	if err != nil {
		return nil, err
	}
	var copied []string
	for _, s := range todo {
		if s.Object != "" {
			if err := r.copyStored(ctx, s.Object, segmentStored(s), dst); err != nil {
				if !errors.Is(err, ErrCorrupt) {
					err = fmt.Errorf("copy %s: %w", s.Name, err)
				}
				return copied, err
			}
		}
		if err := dst.putJSON(ctx, s.Name+manifestName, s); err != nil {
			return copied, err
		}
		copied = append(copied, s.Name)
	}
	return copied, nil
}

// lacking lists what the source holds and the destination does not, by key.
func lacking[T any](ctx context.Context, src, dst func(context.Context) ([]T, error), key func(T) string) ([]T, error) {
	all, err := src(ctx)
	if err != nil {
		return nil, err
	}
	have, err := dst(ctx)
	if err != nil {
		return nil, err
	}
	exists := map[string]bool{}
	for _, x := range have {
		exists[key(x)] = true
	}
	var out []T
	for _, x := range all {
		if !exists[key(x)] {
			out = append(out, x)
		}
	}
	return out, nil
}
