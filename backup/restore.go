package backup

import (
	"context"
	"io"

	"filippo.io/age"

	"github.com/etcdkit/etcdkit/restore"
)

// Restore restores backup m as restore.RestoreFrom restores a stream:
// download, decrypt, decompress and restore overlap. The snapshot's db
// bytes are hashed once, by the restore, and checked against the
// manifest there before anything is committed (OpenForRestore); with
// SkipHashCheck the stream's own sha256 is checked instead (Open).
func (r *Repository) Restore(ctx context.Context, m Manifest, identities []age.Identity, cfg restore.Config) (restore.Result, error) {
	var rc io.ReadCloser
	var sum string
	var err error
	if cfg.SkipHashCheck {
		rc, err = r.Open(ctx, m, identities)
	} else {
		rc, sum, err = r.OpenForRestore(ctx, m, identities)
	}
	if err != nil {
		return restore.Result{}, err
	}
	defer rc.Close()
	cfg.ExpectSHA256 = sum
	return restore.RestoreFrom(ctx, cfg, rc, "backup "+m.ID, m.Size)
}
