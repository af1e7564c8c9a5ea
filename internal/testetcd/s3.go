package testetcd

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// VersityGWVersion is the S3-compatible server the repository tests run
// (Makefile: s3-bins).
const VersityGWVersion = "v1.8.0"

// S3 is a real S3-compatible server (versitygw over a local directory) on
// loopback.
type S3 struct {
	Endpoint string // http://127.0.0.1:port
	Access   string
	Secret   string
	Dir      string
	bin      string
	cmd      *exec.Cmd
	done     chan struct{}
	log      *bytes.Buffer
}

// StartS3 starts versitygw (built by `make s3-bins` if missing), sets
// AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY for the test, and creates the
// given buckets.
func StartS3(t testing.TB, buckets ...string) *S3 {
	t.Helper()
	bin := filepath.Join(cacheDir(), "versitygw", VersityGWVersion, "versitygw")
	if _, err := os.Stat(bin); err != nil {
		makeTarget(t, "s3-bins")
	}
	s := &S3{Access: "etcdkit-test", Secret: "etcdkit-secret-key", Dir: t.TempDir(), bin: bin}
	s.start(t)
	t.Setenv("AWS_ACCESS_KEY_ID", s.Access)
	t.Setenv("AWS_SECRET_ACCESS_KEY", s.Secret)
	cli := s.Client(t)
	for _, b := range buckets {
		if err := cli.MakeBucket(context.Background(), b, minio.MakeBucketOptions{}); err != nil {
			t.Fatalf("make bucket %s: %v", b, err)
		}
	}
	return s
}

// Restart starts the server again on the same directory (on a new port:
// Endpoint and URL change).
func (s *S3) Restart(t testing.TB) {
	t.Helper()
	s.Stop()
	s.start(t)
}

func (s *S3) start(t testing.TB) {
	t.Helper()
	s.done, s.log = make(chan struct{}), &bytes.Buffer{}
	bin := s.bin
	port := FreePort(t)
	s.Endpoint = fmt.Sprintf("http://127.0.0.1:%d", port)
	s.cmd = exec.Command(bin, "--access", s.Access, "--secret", s.Secret, "--port", fmt.Sprintf("127.0.0.1:%d", port), "posix", s.Dir)
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("start versitygw: %v", err)
	}
	go func() { s.cmd.Wait(); close(s.done) }()
	t.Cleanup(s.Stop)
	for deadline := time.Now().Add(30 * time.Second); ; {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("versitygw did not listen: %s", s.log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// URL is the repository URL of a bucket and prefix on this server.
func (s *S3) URL(bucket, prefix string) string {
	return fmt.Sprintf("s3://%s/%s?endpoint=%s&region=us-east-1", bucket, prefix, s.Endpoint)
}

// Client is a plain S3 client for the test's own inspection.
func (s *S3) Client(t testing.TB) *minio.Client {
	t.Helper()
	cli, err := minio.New(s.Endpoint[len("http://"):], &minio.Options{Creds: credentials.NewStaticV4(s.Access, s.Secret, ""), BucketLookup: minio.BucketLookupPath, Region: "us-east-1"})
	if err != nil {
		t.Fatal(err)
	}
	return cli
}

// Stop kills the server.
func (s *S3) Stop() {
	if s.cmd != nil && s.cmd.Process != nil && s.done != nil {
		s.cmd.Process.Kill()
		<-s.done
	}
}
