package main

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/etcdkit/etcdkit/internal/etcdfmt"
	"github.com/etcdkit/etcdkit/internal/testetcd"
)

// TestInspectDU: inspect du's numbers per prefix are the server's live
// key counts and what bbolt finds in the key bucket (revisions, bytes,
// tombstones, free pages), and compaction then defrag free what it says.
func TestInspectDU(t *testing.T) {
	m := testetcd.StartSingle(t)
	cli := m.Client(t)
	ctx := testetcd.Ctx(t, time.Minute)
	groups := map[string]string{ // prefix at depth 2 -> key pattern
		"/registry/pods/":    "/registry/pods/ns-%d/p",
		"/registry/secrets/": "/registry/secrets/s-%d",
		"/app/":              "/app/k%d",
		"":                   "flat%d",
	}
	for round := range 3 {
		for _, pattern := range groups {
			for i := range 6 {
				if _, err := cli.Put(ctx, fmt.Sprintf(pattern, i), fmt.Sprintf("round %d value %d", round, i)); err != nil {
					t.Fatal(err)
				}
			}
		}
		if round == 1 {
			if _, err := cli.Delete(ctx, "/registry/secrets/", clientv3.WithPrefix()); err != nil {
				t.Fatal(err)
			}
			resp, err := cli.Get(ctx, "x")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := cli.Compact(ctx, resp.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i := range 3 {
		if _, err := cli.Delete(ctx, fmt.Sprintf(groups["/app/"], i)); err != nil {
			t.Fatal(err)
		}
	}
	want := map[string]map[string]int64{}
	for prefix := range groups {
		opts := []clientv3.OpOption{clientv3.WithCountOnly(), clientv3.WithPrefix()}
		key := prefix
		if prefix == "" {
			key = "flat"
		}
		resp, err := cli.Get(ctx, key, opts...)
		if err != nil {
			t.Fatal(err)
		}
		want[prefix] = map[string]int64{"live_keys": resp.Count, "revisions": 0, "bytes": 0, "tombstones": 0}
	}
	m.Stop()

	// bbolt counts free pages only when open for writing (it rebuilds the
	// freelist etcd does not store): a copy.
	dbCopy := filepath.Join(t.TempDir(), "db")
	testetcd.CopyFile(t, m.DBPath(), dbCopy)
	db, err := bolt.Open(dbCopy, 0o600, &bolt.Options{NoFreelistSync: true, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	var free int64
	err = db.View(func(tx *bolt.Tx) error {
		free = int64(db.Stats().FreePageN+db.Stats().PendingPageN) * int64(tx.DB().Info().PageSize)
		return tx.Bucket(etcdfmt.BucketKey).ForEach(func(k, v []byte) error {
			var kv mvccpb.KeyValue
			if err := proto.Unmarshal(v, &kv); err != nil {
				return err
			}
			prefix := ""
			for p := range groups {
				if p != "" && len(kv.Key) >= len(p) && string(kv.Key[:len(p)]) == p {
					prefix = p
				}
			}
			w := want[prefix]
			w["revisions"]++
			w["bytes"] += int64(len(k) + len(v))
			if len(k) == etcdfmt.TombstoneKeyLen {
				w["tombstones"]++
			}
			return nil
		})
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}

	out, errOut, code := runCLI("inspect", "du", "--data-dir", m.DataDir, "--top", "0", "-w", "json")
	if code != 0 || errOut != "" {
		t.Fatalf("inspect du: exit %d %q", code, errOut)
	}
	var rep struct {
		Prefixes  []map[string]any
		FreeBytes int64 `json:"free_bytes"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatal(err)
	}
	got := map[string]map[string]int64{}
	for _, p := range rep.Prefixes {
		got[p["prefix"].(string)] = map[string]int64{
			"live_keys": int64(p["live_keys"].(float64)), "revisions": int64(p["revisions"].(float64)),
			"bytes": int64(p["bytes"].(float64)), "tombstones": int64(p["tombstones"].(float64)),
		}
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("du by prefix:\n got %v\nwant %v", got, want)
	}
	if rep.FreeBytes != free {
		t.Fatalf("free bytes %d, bbolt counts %d", rep.FreeBytes, free)
	}
	for _, format := range []string{"simple", "table"} {
		if out, errOut, code := runCLI("inspect", "du", "--data-dir", m.DataDir, "--top", "2", "-w", format); code != 0 || errOut != "" || len(out) == 0 {
			t.Fatalf("inspect du -w %s: exit %d %q", format, code, errOut)
		}
	}
}
