package repo

import (
	"errors"
	"strings"
	"testing"
)

func TestParseURL(t *testing.T) {
	for _, tc := range []struct {
		raw  string
		want Location
		err  bool
	}{
		{"backups", Location{Dir: "backups"}, false},
		{"/var/lib/etcd-backups", Location{Dir: "/var/lib/etcd-backups"}, false},
		{"file:///srv/b", Location{Dir: "/srv/b"}, false},
		{"file://localhost/srv/b", Location{Dir: "/srv/b"}, false},
		{"s3://bkt", Location{Bucket: "bkt", Endpoint: "s3.amazonaws.com", Secure: true}, false},
		{"s3://bkt/etcd/prod/?endpoint=http://127.0.0.1:9000&region=eu-1",
			Location{Bucket: "bkt", Prefix: "etcd/prod/", Endpoint: "127.0.0.1:9000", Region: "eu-1"}, false},
		{"", Location{}, true},
		{"file://", Location{}, true},
		{"file://host/x", Location{}, true},
		{"s3:///x", Location{}, true},
		{"s3://b/a/../../c", Location{}, true},
		{"s3://b/a//c", Location{}, true},
		{"s3://b/x?endpoint=ftp://h:1", Location{}, true},
		{"s3://b/x?endpoint=nohost", Location{}, true},
		{"gs://b/x", Location{}, true},
		{"s3://b%zz/", Location{}, true},
	} {
		got, err := ParseURL(tc.raw)
		if (err != nil) != tc.err || err != nil && !errors.Is(err, ErrURL) {
			t.Errorf("%q: error %v, want error %v", tc.raw, err, tc.err)
			continue
		}
		if got != tc.want {
			t.Errorf("%q: %+v, want %+v", tc.raw, got, tc.want)
		}
	}
}

// FuzzParseURL: any string is a Location or an ErrURL, never a panic; a
// Location names exactly one store, and an S3 prefix never climbs.
func FuzzParseURL(f *testing.F) {
	for _, s := range []string{"backups", "file:///srv/b", "s3://bkt/etcd/?endpoint=http://127.0.0.1:9000&region=r", "s3://b/../x", "://", "s3://b/%2e%2e/x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		loc, err := ParseURL(raw)
		if err != nil {
			if !errors.Is(err, ErrURL) {
				t.Fatalf("%q: error %v is not ErrURL", raw, err)
			}
			return
		}
		switch {
		case loc.Dir != "" && loc.Bucket != "":
			t.Fatalf("%q: both a directory and a bucket: %+v", raw, loc)
		case loc.Dir == "" && (loc.Bucket == "" || loc.Endpoint == ""):
			t.Fatalf("%q: neither a directory nor a bucket with an endpoint: %+v", raw, loc)
		case loc.Prefix != "" && !strings.HasSuffix(loc.Prefix, "/"):
			t.Fatalf("%q: prefix %q does not end in /", raw, loc.Prefix)
		}
		for _, seg := range strings.Split(strings.TrimSuffix(loc.Prefix, "/"), "/") {
			if loc.Prefix != "" && (seg == "" || seg == "." || seg == "..") {
				t.Fatalf("%q: prefix %q has segment %q", raw, loc.Prefix, seg)
			}
		}
	})
}
