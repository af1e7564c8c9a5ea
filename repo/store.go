// Package repo is the storage under a backup repository: a flat namespace
// of objects in a local directory or in an S3-compatible bucket, behind
// one small interface that a further backend (GCS, Azure Blob) can
// implement without touching the rest.
//
// An object appears under its name only when complete: a local file is
// written under a temporary name, fsynced and renamed; an S3 object exists
// only once its (multipart) upload completes.
package repo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"
	"time"
)

// Store holds named objects.
type Store interface {
	// Put stores r under name; size is its length, or -1 if unknown.
	Put(ctx context.Context, name string, r io.Reader, size int64) error
	// Get opens an object for reading.
	Get(ctx context.Context, name string) (io.ReadCloser, error)
	// List returns the complete objects whose names start with prefix.
	List(ctx context.Context, prefix string) ([]Object, error)
	// Delete removes an object; a missing one is not an error.
	Delete(ctx context.Context, name string) error
	// Leftovers returns the traces of interrupted writes older than
	// before (temporary files, incomplete multipart uploads).
	Leftovers(ctx context.Context, before time.Time) ([]string, error)
	// RemoveLeftover removes one trace that Leftovers returned.
	RemoveLeftover(ctx context.Context, name string) error
	// String names the store for messages (credentials never appear).
	String() string
}

// Object is a stored object.
type Object struct {
	Name    string
	Size    int64
	ModTime time.Time
}

// Errors a caller maps to exit codes.
var (
	// ErrNotFound: no such object (or bucket).
	ErrNotFound = errors.New("not found")
	// ErrAccess: the store refused the credentials.
	ErrAccess = errors.New("access denied")
	// ErrURL: a repository URL that names no supported store.
	ErrURL = errors.New("bad repository URL")
)

// Open opens the store a repository URL names: a path or file:///path, or
// s3://bucket/prefix?endpoint=http://host:port&region=... (credentials from
// AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or the shared credentials
// file; path-style addressing).
func Open(ctx context.Context, raw string) (Store, error) {
	if !strings.Contains(raw, "://") {
		return openLocal(raw)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%w %q: %v", ErrURL, raw, err)
	}
	switch u.Scheme {
	case "file":
		if u.Host != "" && u.Host != "localhost" {
			return nil, fmt.Errorf("%w %q: file URLs name a local path (file:///path)", ErrURL, raw)
		}
		return openLocal(u.Path)
	case "s3":
		return openS3(ctx, u)
	}
	return nil, fmt.Errorf("%w %q: use a path, file:///path or s3://bucket/prefix", ErrURL, raw)
}
