package repo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"path"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

const (
	s3PartSize = 16 << 20 // multipart upload part size
	s3Threads  = 4        // parts uploaded in parallel
	// A stream of unknown size (a backup as it is taken) is cut into
	// parts in memory, one buffer per part in flight: one of 6 MiB,
	// uploaded while the stream waits in the backup's own buffers, keeps a
	// backup's memory flat (4 of 16 MiB were 64 MiB, which pushed the
	// garbage collector into a loop) and still allows objects of 60 GB
	// (S3's 10,000 parts).
	s3StreamPartSize = 6 << 20
)

type s3store struct {
	cli    *minio.Client
	bucket string
	prefix string // "" or ending in "/"
	desc   string
}

// parseS3 reads s3://bucket/prefix?endpoint=http(s)://host:port&region=R.
// A prefix is a key prefix: segments of "." or ".." are refused, so no
// prefix reads as a path that climbs out of the bucket on a server that
// maps keys to files.
func parseS3(u *url.URL) (Location, error) {
	if u.Host == "" {
		return Location{}, fmt.Errorf("%w: s3 URL without a bucket", ErrURL)
	}
	q := u.Query()
	loc := Location{Bucket: u.Host, Endpoint: "s3.amazonaws.com", Secure: true, Region: q.Get("region")}
	if e := q.Get("endpoint"); e != "" {
		eu, err := url.Parse(e)
		if err != nil || eu.Host == "" || (eu.Scheme != "http" && eu.Scheme != "https") {
			return Location{}, fmt.Errorf("%w: endpoint %q: want http(s)://host:port", ErrURL, e)
		}
		loc.Endpoint, loc.Secure = eu.Host, eu.Scheme == "https"
	}
	if p := strings.Trim(u.Path, "/"); p != "" {
		for _, seg := range strings.Split(p, "/") {
			if seg == "" || seg == "." || seg == ".." {
				return Location{}, fmt.Errorf("%w: s3 prefix %q: empty, . and .. segments are not allowed", ErrURL, p)
			}
		}
		loc.Prefix = p + "/"
	}
	return loc, nil
}

func openS3(ctx context.Context, loc Location) (Store, error) {
	creds := credentials.NewChainCredentials([]credentials.Provider{&credentials.EnvAWS{}, &credentials.FileAWSCredentials{}})
	cli, err := minio.New(loc.Endpoint, &minio.Options{
		Creds: creds, Secure: loc.Secure, Region: loc.Region, BucketLookup: minio.BucketLookupPath,
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrURL, err)
	}
	s := &s3store{cli: cli, bucket: loc.Bucket, prefix: loc.Prefix, desc: fmt.Sprintf("s3://%s/%s (%s)", loc.Bucket, loc.Prefix, loc.Endpoint)}
	ok, err := cli.BucketExists(ctx, s.bucket)
	if err != nil {
		return nil, s.err("open", err)
	}
	if !ok {
		return nil, fmt.Errorf("%s: bucket %q: %w (create it first)", s.desc, s.bucket, ErrNotFound)
	}
	return s, nil
}

func (s *s3store) String() string { return s.desc }

// err classifies an S3 error.
func (s *s3store) err(op string, err error) error {
	code := minio.ToErrorResponse(err).Code
	switch code {
	case "NoSuchKey", "NoSuchBucket", "NoSuchUpload":
		return fmt.Errorf("%s: %s: %w (%s)", s.desc, op, ErrNotFound, code)
	case "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken":
		return fmt.Errorf("%s: %s: %w (%s): check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or the shared credentials file", s.desc, op, ErrAccess, code)
	}
	return fmt.Errorf("%s: %s: %w", s.desc, op, err)
}

// key is the object key of a name; names that could leave the prefix are
// refused (CheckName).
func (s *s3store) key(name string) (string, error) {
	if err := CheckName(name); err != nil {
		return "", err
	}
	return s.prefix + name, nil
}

func (s *s3store) Put(ctx context.Context, name string, r io.Reader, size int64) error {
	key, err := s.key(name)
	if err != nil {
		return err
	}
	opts := minio.PutObjectOptions{PartSize: s3PartSize, NumThreads: s3Threads, ContentType: "application/octet-stream"}
	if size < 0 {
		opts.PartSize, opts.NumThreads = s3StreamPartSize, 1
	}
	if _, err := s.cli.PutObject(ctx, s.bucket, key, r, size, opts); err != nil {
		return s.err("put "+name, err)
	}
	return nil
}

func (s *s3store) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	key, err := s.key(name)
	if err != nil {
		return nil, err
	}
	obj, err := s.cli.GetObject(ctx, s.bucket, key, minio.GetObjectOptions{})
	if err != nil {
		return nil, s.err("get "+name, err)
	}
	if _, err := obj.Stat(); err != nil {
		obj.Close()
		return nil, s.err("get "+name, err)
	}
	return &s3reader{obj, s, name}, nil
}

type s3reader struct {
	*minio.Object
	s    *s3store
	name string
}

func (r *s3reader) Read(p []byte) (int, error) {
	n, err := r.Object.Read(p)
	if err != nil && !errors.Is(err, io.EOF) {
		err = r.s.err("read "+r.name, err)
	}
	return n, err
}

func (s *s3store) List(ctx context.Context, prefix string) ([]Object, error) {
	var out []Object
	for o := range s.cli.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{Prefix: s.prefix + prefix, Recursive: true}) {
		if o.Err != nil {
			return nil, s.err("list", o.Err)
		}
		out = append(out, Object{Name: strings.TrimPrefix(o.Key, s.prefix), Size: o.Size, ModTime: o.LastModified})
	}
	return out, nil
}

func (s *s3store) Delete(ctx context.Context, name string) error {
	key, err := s.key(name)
	if err != nil {
		return err
	}
	if err := s.cli.RemoveObject(ctx, s.bucket, key, minio.RemoveObjectOptions{}); err != nil {
		if errors.Is(s.err("", err), ErrNotFound) {
			return nil
		}
		return s.err("delete "+name, err)
	}
	return nil
}

func (s *s3store) Leftovers(ctx context.Context, before time.Time) ([]string, error) {
	var out []string
	for u := range s.cli.ListIncompleteUploads(ctx, s.bucket, s.prefix, true) {
		if u.Err != nil {
			return nil, s.err("list incomplete uploads", u.Err)
		}
		if u.Initiated.Before(before) {
			out = append(out, path.Clean(strings.TrimPrefix(u.Key, s.prefix)))
		}
	}
	return out, nil
}

func (s *s3store) RemoveLeftover(ctx context.Context, name string) error {
	key, err := s.key(name)
	if err != nil {
		return err
	}
	if err := s.cli.RemoveIncompleteUpload(ctx, s.bucket, key); err != nil {
		return s.err("abort upload "+name, err)
	}
	return nil
}
