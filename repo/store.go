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

// ErrName: an object name that is not a plain relative name inside the
// store (absolute, or with empty, "." or ".." segments).
var ErrName = errors.New("object name outside the repository")

// CheckName refuses object names that could resolve outside a store's root
// (a local directory) or prefix (a bucket on a server that maps keys to
// files): every store checks every name, whatever the caller.
func CheckName(name string) error {
	if name == "" || strings.HasPrefix(name, "/") || strings.Contains(name, "\\") || strings.ContainsRune(name, 0) {
		return fmt.Errorf("%w: %q", ErrName, name)
	}
	for _, seg := range strings.Split(name, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return fmt.Errorf("%w: %q", ErrName, name)
		}
	}
	return nil
}

// Location is a parsed repository URL.
type Location struct {
	// Dir is a local repository's directory ("" for S3).
	Dir string
	// Bucket, Prefix ("" or ending in "/"), Endpoint (host:port), Secure
	// and Region name an S3 repository.
	Bucket, Prefix, Endpoint, Region string
	Secure                           bool
}

// ParseURL reads a repository URL: a path or file:///path, or
// s3://bucket/prefix?endpoint=http://host:port&region=... It touches
// nothing; Open does.
func ParseURL(raw string) (Location, error) {
	if !strings.Contains(raw, "://") {
		if raw == "" {
			return Location{}, fmt.Errorf("%w: empty path", ErrURL)
		}
		return Location{Dir: raw}, nil
	}
	u, err := url.Parse(raw)
	if err != nil {
		return Location{}, fmt.Errorf("%w %q: %w", ErrURL, raw, err)
	}
	switch u.Scheme {
	case "file":
		if u.Host != "" && u.Host != "localhost" {
			return Location{}, fmt.Errorf("%w %q: file URLs name a local path (file:///path)", ErrURL, raw)
		}
		if u.Path == "" {
			return Location{}, fmt.Errorf("%w %q: empty path", ErrURL, raw)
		}
		return Location{Dir: u.Path}, nil
	case "s3":
		return parseS3(u)
	}
	return Location{}, fmt.Errorf("%w %q: use a path, file:///path or s3://bucket/prefix", ErrURL, raw)
}

// Open opens the store a repository URL names (see ParseURL); S3
// credentials come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or the
// shared credentials file, with path-style addressing.
func Open(ctx context.Context, raw string) (Store, error) {
	loc, err := ParseURL(raw)
	if err != nil {
		return nil, err
	}
	if loc.Dir != "" {
		return openLocal(loc.Dir)
	}
	return openS3(ctx, loc)
}
