// Command fuzzseeds writes the seed corpora of etcdkit's fuzz targets from
// real data: it starts an embedded etcd in a temporary directory, writes
// puts, overwrites, deletes, a transaction, a lease with keys and a
// compaction, lets it cut a .snap file, and stores a snapshot (its db, and
// the db with its trailer), the used part of a WAL segment and the .snap file as Go fuzz
// corpus files under each package's testdata/fuzz. Run from the repository
// root: go run ./tools/fuzzseeds
package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

func main() {
	dir, err := os.MkdirTemp("", "etcdkit-fuzzseeds-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	cfg := embed.NewConfig()
	cfg.Dir = filepath.Join(dir, "m.etcd")
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	cfg.SnapshotCount = 20
	cu, pu := freeURL(), freeURL()
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{cu}, []url.URL{cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{pu}, []url.URL{pu}
	cfg.InitialCluster = cfg.Name + "=" + pu.String()
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		log.Fatal(err)
	}
	<-e.Server.ReadyNotify()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{cu.String()}, Logger: zap.NewNop()})
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	must := func(_ any, err error) {
		if err != nil {
			log.Fatal(err)
		}
	}
	lease, err := cli.Grant(ctx, 3600)
	must(nil, err)
	for i := range 30 {
		must(cli.Put(ctx, fmt.Sprintf("/registry/pods/ns%d/p%d", i%3, i), fmt.Sprintf("v%d", i)))
	}
	must(cli.Put(ctx, "/leased/a", "x", clientv3.WithLease(lease.ID)))
	must(cli.Put(ctx, "/registry/pods/ns0/p0", "overwritten"))
	must(cli.Delete(ctx, "/registry/pods/ns1/", clientv3.WithPrefix()))
	must(cli.Txn(ctx).Then(clientv3.OpPut("/txn/a", "1"), clientv3.OpPut("/txn/b", "2"), clientv3.OpDelete("/leased/none")).Commit())
	st, err := cli.Put(ctx, "/mid", "m")
	must(nil, err)
	must(cli.Compact(ctx, st.Header.Revision-5))
	for i := range 10 {
		must(cli.Put(ctx, "/after", strconv.Itoa(i)))
	}
	rc, err := cli.Snapshot(ctx)
	must(nil, err)
	snapshot, err := io.ReadAll(rc)
	must(nil, err)
	cli.Close()
	e.Close()

	wals, err := filepath.Glob(filepath.Join(cfg.Dir, "member", "wal", "*.wal"))
	must(nil, err)
	snaps, err := filepath.Glob(filepath.Join(cfg.Dir, "member", "snap", "*.snap"))
	must(nil, err)
	if len(wals) == 0 || len(snaps) == 0 {
		log.Fatalf("etcd wrote %d WAL segments and %d .snap files", len(wals), len(snaps))
	}
	sort.Strings(wals)
	sort.Strings(snaps)
	wal, err := os.ReadFile(wals[len(wals)-1])
	must(nil, err)
	snapFile, err := os.ReadFile(snaps[len(snaps)-1])
	must(nil, err)

	write("internal/boltpage/testdata/fuzz/FuzzScan/etcd-snapshot", corpus(snapshot[:len(snapshot)-32]))
	write("internal/etcdfmt/testdata/fuzz/FuzzWALReader/etcd-wal", corpus(usedPart(wal)))
	write("internal/etcdfmt/testdata/fuzz/FuzzTrailerWriter/etcd-snapshot", corpus(snapshot, uint16(4096), uint16(777)))
	write("verify/testdata/fuzz/FuzzSnapFile/etcd-snap", corpus(snapFile))
}

// usedPart cuts a preallocated WAL segment after its last record (the
// rest is zeros), keeping one zero page as etcd leaves it.
func usedPart(b []byte) []byte {
	end := len(bytes.TrimRight(b, "\x00"))
	end = min((end+7)/8*8+4096, len(b))
	return b[:end]
}

// corpus encodes values in Go's fuzz corpus file format.
func corpus(vals ...any) []byte {
	var b bytes.Buffer
	b.WriteString("go test fuzz v1\n")
	for _, v := range vals {
		switch v := v.(type) {
		case []byte:
			fmt.Fprintf(&b, "[]byte(%q)\n", v)
		case uint16:
			fmt.Fprintf(&b, "uint16(%d)\n", v)
		}
	}
	return b.Bytes()
}

func write(path string, b []byte) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		log.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s: %d bytes\n", path, len(b))
}

func freeURL() url.URL {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()
	return url.URL{Scheme: "http", Host: l.Addr().String()}
}
