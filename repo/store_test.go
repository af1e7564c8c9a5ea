package repo_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/etcdkit/etcdkit/internal/testetcd"
	"github.com/etcdkit/etcdkit/repo"
)

// TestStoreConformance is the contract every repo.Store keeps, run
// against each store there is: a local directory and a real S3 server on
// loopback. A new backend adds itself to the table and must pass it.
func TestStoreConformance(t *testing.T) {
	s3 := testetcd.StartS3(t, "conformance")
	stores := []struct {
		name string
		url  func(t *testing.T, prefix string) string
	}{
		{"local", func(t *testing.T, _ string) string { return filepath.Join(t.TempDir(), "repo") }},
		{"s3", func(t *testing.T, prefix string) string { return s3.URL("conformance", prefix) }},
	}
	for _, st := range stores {
		t.Run(st.name, func(t *testing.T) {
			ctx := context.Background()
			open := func(t *testing.T) repo.Store {
				t.Helper()
				return testetcd.Must(repo.Open(ctx, st.url(t, strings.ReplaceAll(t.Name(), "/", "-"))))(t)
			}
			t.Run("put, get, list, delete", func(t *testing.T) {
				s := open(t)
				if _, err := s.Get(ctx, "backups/a/missing"); !errors.Is(err, repo.ErrNotFound) {
					t.Fatalf("Get of a missing object: %v, want %v", err, repo.ErrNotFound)
				}
				if err := s.Delete(ctx, "backups/a/missing"); err != nil {
					t.Fatalf("Delete of a missing object: %v", err)
				}
				put(t, s, "backups/a/one", []byte("first"), 5)
				put(t, s, "backups/a/one", []byte("second, longer"), -1) // overwrite, size unknown
				put(t, s, "backups/b/two", []byte("2"), 1)
				put(t, s, "other/x", []byte("x"), 1)
				if got := get(t, s, "backups/a/one"); string(got) != "second, longer" {
					t.Fatalf("Get after an overwrite: %q", got)
				}
				list := names(t, s, "backups/")
				if strings.Join(list, ",") != "backups/a/one:14,backups/b/two:1" {
					t.Fatalf("List(backups/): %v", list)
				}
				if err := s.Delete(ctx, "backups/a/one"); err != nil {
					t.Fatal(err)
				}
				if _, err := s.Get(ctx, "backups/a/one"); !errors.Is(err, repo.ErrNotFound) {
					t.Fatalf("Get after Delete: %v", err)
				}
				if list := names(t, s, ""); strings.Join(list, ",") != "backups/b/two:1,other/x:1" {
					t.Fatalf("List(): %v", list)
				}
			})
			t.Run("large object in parts", func(t *testing.T) {
				s := open(t)
				b := make([]byte, 40<<20) // three 16 MiB parts
				rng := rand.New(rand.NewPCG(1, 2))
				for i := range b {
					b[i] = byte(rng.Uint32())
				}
				for _, size := range []int64{int64(len(b)), -1} {
					put(t, s, "backups/big/object", b, size)
					if got := get(t, s, "backups/big/object"); sha256.Sum256(got) != sha256.Sum256(b) {
						t.Fatalf("size %d: %d bytes back, not what was put", size, len(got))
					}
				}
			})
			t.Run("a failed put is invisible and leaves removable traces", func(t *testing.T) {
				s := open(t)
				r := io.MultiReader(bytes.NewReader(make([]byte, 20<<20)), failingReader{})
				if err := s.Put(ctx, "backups/f/object", r, -1); err == nil {
					t.Fatal("Put of a failing reader succeeded")
				}
				if _, err := s.Get(ctx, "backups/f/object"); !errors.Is(err, repo.ErrNotFound) {
					t.Fatalf("Get of a failed put: %v", err)
				}
				if list := names(t, s, ""); len(list) != 0 {
					t.Fatalf("a failed put is listed: %v", list)
				}
				left := testetcd.Must(s.Leftovers(ctx, time.Now().Add(time.Hour)))(t)
				for _, l := range left {
					if err := s.RemoveLeftover(ctx, l); err != nil {
						t.Fatalf("RemoveLeftover(%s): %v", l, err)
					}
				}
				if left := testetcd.Must(s.Leftovers(ctx, time.Now().Add(time.Hour)))(t); len(left) != 0 {
					t.Fatalf("leftovers after removing them: %v", left)
				}
			})
			t.Run("names outside the store are refused", func(t *testing.T) {
				s := open(t)
				for _, name := range []string{"../x", "/abs", "a/../../x", "a//b", "./a", ""} {
					if err := s.Put(ctx, name, strings.NewReader("x"), 1); !errors.Is(err, repo.ErrName) {
						t.Errorf("Put(%q): %v, want %v", name, err, repo.ErrName)
					}
					if _, err := s.Get(ctx, name); !errors.Is(err, repo.ErrName) {
						t.Errorf("Get(%q): %v, want %v", name, err, repo.ErrName)
					}
					if err := s.Delete(ctx, name); !errors.Is(err, repo.ErrName) {
						t.Errorf("Delete(%q): %v, want %v", name, err, repo.ErrName)
					}
				}
			})
			t.Run("String holds no secret", func(t *testing.T) {
				if s := open(t).String(); strings.Contains(s, s3.Secret) || s == "" {
					t.Fatalf("String() = %q", s)
				}
			})
		})
	}
	t.Run("s3 bucket missing", func(t *testing.T) {
		if _, err := repo.Open(context.Background(), s3.URL("no-such-bucket", "x")); !errors.Is(err, repo.ErrNotFound) {
			t.Fatalf("Open of a missing bucket: %v, want %v", err, repo.ErrNotFound)
		}
	})
	t.Run("s3 wrong credentials", func(t *testing.T) {
		t.Setenv("AWS_SECRET_ACCESS_KEY", "wrong")
		if _, err := repo.Open(context.Background(), s3.URL("conformance", "x")); !errors.Is(err, repo.ErrAccess) {
			t.Fatalf("Open with a wrong secret: %v, want %v", err, repo.ErrAccess)
		}
	})
}

type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, errors.New("the source failed") }

func put(t *testing.T, s repo.Store, name string, b []byte, size int64) {
	t.Helper()
	if err := s.Put(context.Background(), name, bytes.NewReader(b), size); err != nil {
		t.Fatalf("Put(%s): %v", name, err)
	}
}

func get(t *testing.T, s repo.Store, name string) []byte {
	t.Helper()
	rc := testetcd.Must(s.Get(context.Background(), name))(t)
	defer rc.Close()
	return testetcd.Must(io.ReadAll(rc))(t)
}

// names lists name:size of the objects under prefix, sorted.
func names(t *testing.T, s repo.Store, prefix string) []string {
	t.Helper()
	var out []string
	for _, o := range testetcd.Must(s.List(context.Background(), prefix))(t) {
		out = append(out, o.Name+":"+itoa(o.Size))
	}
	sort.Strings(out)
	return out
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
