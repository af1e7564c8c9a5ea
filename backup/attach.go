package backup

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"filippo.io/age"

	"github.com/etcdkit/etcdkit/internal/fsutil"
)

// Attachment is a file a restore also needs, stored with a backup: the
// apiserver's encryption config, certificates, a token. It is encrypted to
// the backup's age recipients (stored in plaintext only when asked to).
type Attachment struct {
	Name         string `json:"name"`   // the file's base name
	Object       string `json:"object"` // backups/<id>/attachments/<i>-<name>[.age]
	Mode         uint32 `json:"mode"`   // permission bits, restored on extraction
	Size         int64  `json:"size"`
	SHA256       string `json:"sha256"`
	StoredSize   int64  `json:"storedSize"`
	StoredSHA256 string `json:"storedSha256"`
}

var (
	// ErrAttachment: an attachment refused before anything is stored
	// (not a regular file, a name twice, plaintext not allowed).
	ErrAttachment = errors.New("bad attachment")
	// ErrAttachmentExists: extraction would overwrite a file.
	ErrAttachmentExists = errors.New("refusing to overwrite")
)

// maxAttachmentName bounds an attachment's name (the object name adds a
// prefix, and file names are at most 255 bytes).
const maxAttachmentName = 200

// checkAttachmentName refuses a name that is not one plain path element.
func checkAttachmentName(n string) error {
	if n == "" || n == "." || n == ".." || len(n) > maxAttachmentName || strings.ContainsAny(n, "/\x00") {
		return fmt.Errorf("%w: %q is not a file name", ErrAttachment, n)
	}
	return nil
}

func (m Manifest) attachmentObject(i int, name string) string {
	o := fmt.Sprintf("%sattachments/%d-%s", m.dir(), i, name)
	if m.Encryption == "age" {
		o += ".age"
	}
	return o
}

// CheckAttachments refuses, before the snapshot is taken, attachments that
// are not regular files, share a name, or would be stored in plaintext
// without AllowPlaintextAttachments.
func CheckAttachments(opts CreateOptions) error {
	if len(opts.Attachments) == 0 {
		return nil
	}
	if len(opts.Recipients) == 0 && !opts.AllowPlaintextAttachments {
		return fmt.Errorf("%w: attachments hold secrets (encryption configs, keys, tokens); encrypt the backup with --encrypt-to, or pass --allow-plaintext-attachments", ErrAttachment)
	}
	seen := map[string]bool{}
	for _, p := range opts.Attachments {
		name := filepath.Base(p)
		if err := checkAttachmentName(name); err != nil {
			return err
		}
		if seen[name] {
			return fmt.Errorf("%w: two attachments named %q", ErrAttachment, name)
		}
		seen[name] = true
		fi, err := os.Stat(p)
		if err != nil {
			return err
		}
		if !fi.Mode().IsRegular() {
			return fmt.Errorf("%w: %s is not a regular file", ErrAttachment, p)
		}
	}
	return nil
}

// attach stores the files with the backup, encrypted as the snapshot is
// (not compressed: they are small), and lists them in the manifest. On an
// error the attachments stored so far are removed.
func (r *Repository) attach(ctx context.Context, m *Manifest, paths []string, recipients []age.Recipient) error {
	for i, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			r.removeAttachments(ctx, *m)
			return err
		}
		fi, err := f.Stat()
		if err == nil {
			a := Attachment{Name: filepath.Base(p), Mode: uint32(fi.Mode().Perm())}
			a.Object = m.attachmentObject(i, a.Name)
			var st stored
			st, err = r.put(ctx, a.Object, f, "none", recipients, nil, false)
			a.SHA256, a.Size, a.StoredSHA256, a.StoredSize = st.raw, st.rawSize, st.stored, st.storedSize
			if err == nil {
				m.Attachments = append(m.Attachments, a)
			}
		}
		f.Close()
		if err != nil {
			r.removeAttachments(ctx, *m)
			return fmt.Errorf("attachment %s: %w", p, err)
		}
	}
	return nil
}

func (r *Repository) removeAttachments(ctx context.Context, m Manifest) error {
	var first error
	for _, a := range m.Attachments {
		if err := r.Store.Delete(context.WithoutCancel(ctx), a.Object); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// openAttachment streams an attachment's plaintext, checked against the
// manifest as Open checks the snapshot.
func (r *Repository) openAttachment(ctx context.Context, m Manifest, a Attachment, identities []age.Identity) (io.Reader, func() error, error) {
	rc, err := r.Store.Get(ctx, a.Object)
	if err != nil {
		return nil, nil, err
	}
	st := &checkedReader{r: rc, h: sha256.New(), want: a.StoredSHA256, size: a.StoredSize, what: "stored attachment " + a.Object}
	var plain io.Reader = st
	if m.Encryption == "age" {
		if len(identities) == 0 {
			rc.Close()
			return nil, nil, fmt.Errorf("%w %s: its attachments are encrypted with age; pass --identity FILE", ErrIdentity, m.ID)
		}
		d, err := age.Decrypt(st, identities...)
		if err != nil {
			rc.Close()
			return nil, nil, fmt.Errorf("%w: attachment %s of %s: %w", ErrCorrupt, a.Name, m.ID, err)
		}
		plain = d
	}
	raw := &checkedReader{r: plain, h: sha256.New(), want: a.SHA256, size: a.Size, what: "attachment " + a.Name + " of " + m.ID, then: st.drain}
	return raw, rc.Close, nil
}

// ExtractAttachments writes the backup's attachments into dir (made 0700
// when missing) under their names and modes. Each is written under a
// temporary name, checked against the manifest, fsynced, and linked to its
// name last, which refuses an existing file (ErrAttachmentExists). It
// returns the paths written.
func (r *Repository) ExtractAttachments(ctx context.Context, m Manifest, identities []age.Identity, dir string) ([]string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	var written []string
	for _, a := range m.Attachments {
		dst := filepath.Join(dir, a.Name)
		if _, err := os.Lstat(dst); err == nil {
			return written, fmt.Errorf("%w %s: it exists (attachment %s of backup %s)", ErrAttachmentExists, dst, a.Name, m.ID)
		}
		if err := r.extract(ctx, m, a, identities, dst); err != nil {
			return written, err
		}
		written = append(written, dst)
	}
	return written, fsutil.SyncDir(dir)
}

func (r *Repository) extract(ctx context.Context, m Manifest, a Attachment, identities []age.Identity, dst string) error {
	src, closeSrc, err := r.openAttachment(ctx, m, a, identities)
	if err != nil {
		return err
	}
	defer closeSrc()
	tmp, err := fsutil.TempSibling(dst, "attachment")
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	_, err = io.Copy(f, src) // fails before EOF if a byte differs
	if err == nil {
		err = f.Chmod(os.FileMode(a.Mode))
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("attachment %s of %s: %w", a.Name, m.ID, err)
	}
	if err := os.Link(tmp, dst); err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("%w %s: it exists (attachment %s of backup %s)", ErrAttachmentExists, dst, a.Name, m.ID)
		}
		return err
	}
	return nil
}
