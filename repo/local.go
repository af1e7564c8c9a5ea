package repo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/etcdkit/etcdkit/internal/fsutil"
)

// partMarker marks a local object still being written.
const partMarker = fsutil.PartMarker

type local struct{ root string }

func openLocal(dir string) (Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("repository %s: %w", dir, err)
	}
	return &local{root: dir}, nil
}

func (l *local) String() string { return l.root }

// path is the file of an object; names that would leave the root are
// refused (CheckName).
func (l *local) path(name string) (string, error) {
	if err := CheckName(name); err != nil {
		return "", err
	}
	return filepath.Join(l.root, filepath.FromSlash(name)), nil
}

func (l *local) Put(ctx context.Context, name string, r io.Reader, size int64) error {
	final, err := l.path(name)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(final), 0o700); err != nil {
		return err
	}
	tmp, err := fsutil.TempSibling(final, partMarker)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	_, err = io.Copy(f, ctxReader{ctx, r})
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = fsutil.RenameSynced(tmp, final)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("store %s: %w", name, err)
	}
	return nil
}

func (l *local) Get(_ context.Context, name string) (io.ReadCloser, error) {
	path, err := l.path(name)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s in %s: %w", name, l.root, ErrNotFound)
	}
	return f, err
}

func (l *local) List(_ context.Context, prefix string) ([]Object, error) {
	var out []Object
	err := filepath.WalkDir(l.root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || strings.Contains(d.Name(), partMarker) {
			return nil
		}
		rel, _ := filepath.Rel(l.root, p)
		name := filepath.ToSlash(rel)
		if !strings.HasPrefix(name, prefix) {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return nil // removed meanwhile
		}
		out = append(out, Object{Name: name, Size: fi.Size(), ModTime: fi.ModTime()})
		return nil
	})
	return out, err
}

func (l *local) Delete(_ context.Context, name string) error {
	p, err := l.path(name)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	// Drop directories the removal emptied, up to the root.
	for dir := filepath.Dir(p); dir != filepath.Clean(l.root) && strings.HasPrefix(dir, filepath.Clean(l.root)); dir = filepath.Dir(dir) {
		if os.Remove(dir) != nil {
			break
		}
	}
	return nil
}

func (l *local) Leftovers(_ context.Context, before time.Time) ([]string, error) {
	var out []string
	err := filepath.WalkDir(l.root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.Contains(d.Name(), partMarker) {
			return err
		}
		if fi, err := d.Info(); err == nil && fi.ModTime().Before(before) {
			rel, _ := filepath.Rel(l.root, p)
			out = append(out, filepath.ToSlash(rel))
		}
		return nil
	})
	return out, err
}

func (l *local) RemoveLeftover(ctx context.Context, name string) error { return l.Delete(ctx, name) }

// ctxReader stops a copy when its context ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
