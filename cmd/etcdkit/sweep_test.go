package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/etcdkit/etcdkit/internal/testetcd"
)

// TestDamageSweep runs every offline command on many damaged variants of a
// real snapshot (bytes flipped in a page with and without a matching
// trailer, pages zeroed or copied over others, truncations, meta pages
// pointing anywhere with valid checksums), each command in a child process
// with 4 GiB of address space and a minute. Each must end in a documented
// exit code with at most one line on stderr, no panic, no hang; nothing
// but a restore's data dir or a defrag's successful rewrite may change,
// and a failed restore leaves nothing. ETCDKIT_SWEEP sets the number of
// variants (default 40).
func TestDamageSweep(t *testing.T) {
	n := 40
	if v, err := strconv.Atoi(os.Getenv("ETCDKIT_SWEEP")); err == nil && v > 0 {
		n = v
	}
	m := testetcd.StartSingle(t)
	if _, err := testetcd.Load(testetcd.Ctx(t, time.Minute), m.Client(t), testetcd.LoadSpec{Keys: 300, Rounds: 3, Seed: 21}); err != nil {
		t.Fatal(err)
	}
	rc := testetcd.Must(m.Client(t).Snapshot(testetcd.Ctx(t, time.Minute)))(t)
	snap := testetcd.Must(io.ReadAll(rc))(t)
	rc.Close()
	db := snap[:len(snap)-32]
	ps := int(binary.LittleEndian.Uint32(db[16+8:]))
	pages := len(db) / ps
	rng := rand.New(rand.NewPCG(7, uint64(n)))
	type variant struct {
		class string
		b     []byte
	}
	withTrailer := func(db []byte) []byte { s := sha256.Sum256(db); return append(db, s[:]...) }
	setMeta := func(db []byte, field int, v uint64) []byte {
		b := bytes.Clone(db)
		for _, off := range []int{0, ps} {
			meta := b[off+16 : off+16+64]
			binary.LittleEndian.PutUint64(meta[field:], v)
			h := fnv.New64a()
			h.Write(meta[:56])
			binary.LittleEndian.PutUint64(meta[56:], h.Sum64())
		}
		return b
	}
	gens := []func() variant{
		func() variant { // bytes flipped in a page, the trailer recomputed so restore reads on
			b := bytes.Clone(db)
			p := 2 + rng.IntN(pages-2)
			for range 1 + rng.IntN(8) {
				b[p*ps+rng.IntN(ps)] ^= byte(1 + rng.IntN(255))
			}
			return variant{"bytes flipped, trailer valid", withTrailer(b)}
		},
		func() variant { // the same with the original trailer (hash mismatch)
			b := bytes.Clone(snap)
			b[(2+rng.IntN(pages-2))*ps+rng.IntN(ps)] ^= 0xff
			return variant{"bytes flipped, trailer stale", b}
		},
		func() variant { // a page zeroed
			b := bytes.Clone(db)
			p := 2 + rng.IntN(pages-2)
			clear(b[p*ps : (p+1)*ps])
			return variant{"page zeroed", withTrailer(b)}
		},
		func() variant { // a page copied over another (two references, wrong ids)
			b := bytes.Clone(db)
			from, to := 2+rng.IntN(pages-2), 2+rng.IntN(pages-2)
			copy(b[to*ps:(to+1)*ps], b[from*ps:(from+1)*ps])
			return variant{"page copied over another", withTrailer(b)}
		},
		func() variant { // truncated anywhere
			return variant{"truncated", bytes.Clone(snap[:rng.IntN(len(snap))])}
		},
		func() variant { // meta: root, freelist or page count anywhere, checksums valid
			field := []int{16, 32, 40}[rng.IntN(3)]
			v := []uint64{0, 1, 2, uint64(pages - 1), uint64(pages), uint64(pages * 2), 1 << 40, 1<<64 - 1, rng.Uint64()}[rng.IntN(9)]
			return variant{fmt.Sprintf("meta field %d", field), withTrailer(setMeta(db, field, v))}
		},
	}
	dir := t.TempDir()
	var vs []variant
	for i := range n {
		vs = append(vs, gens[i%len(gens)]())
	}
	commands := []struct {
		name   string
		args   func(in, out string) []string
		writes bool
	}{
		{"snapshot status", func(in, _ string) []string { return []string{"snapshot", "status", in} }, false},
		{"hashkv", func(in, _ string) []string { return []string{"hashkv", in} }, false},
		{"verify snapshot", func(in, _ string) []string { return []string{"verify", "snapshot", in} }, false},
		{"defrag", func(in, _ string) []string { return []string{"defrag", "--db", in} }, true},
		{"snapshot restore", func(in, out string) []string {
			return []string{"snapshot", "restore", in, "--skip-hash-check", "--data-dir", out}
		}, false},
	}
	type outcome struct{ class, cmd, result string }
	var mu sync.Mutex
	counts := map[outcome]int{}
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			for i := range jobs {
				v := vs[i]
				for _, c := range commands {
					work := filepath.Join(dir, fmt.Sprintf("v%03d-%s", i, strings.ReplaceAll(c.name, " ", "-")))
					if err := os.Mkdir(work, 0o700); err != nil {
						t.Error(err)
						return
					}
					in := filepath.Join(work, "input.db")
					if err := os.WriteFile(in, v.b, 0o600); err != nil {
						t.Error(err)
						return
					}
					out := filepath.Join(work, "restored.etcd")
					code, stdout, stderr, err := runChildCLI(c.args(in, out))
					result := fmt.Sprintf("exit %d", code)
					bad := ""
					after, rerr := os.ReadFile(in)
					switch {
					case err != nil:
						bad = err.Error()
					case code != exitOK && code != exitInput && code != exitCorrupt && code != exitMismatch:
						bad = "undocumented exit code for damage"
					case strings.Contains(stderr, "goroutine ") || strings.Contains(stderr, "panic") || strings.Count(stderr, "\n") > 1:
						bad = "not one line"
					case code != exitOK && (stdout != "" && c.name != "verify snapshot" || !strings.Contains(stderr, "input.db")):
						bad = "the error does not name the file, or stdout is not empty"
					case rerr != nil || !bytes.Equal(after, v.b) && !(c.writes && code == exitOK):
						bad = "the input changed"
					}
					if c.name == "snapshot restore" && code != exitOK {
						if _, err := os.Stat(out); !os.IsNotExist(err) {
							bad = "a failed restore left its data dir"
						}
						for _, e := range testetcd.DirNames(t, work) {
							if e != "input.db" {
								bad = "a failed restore left " + e
							}
						}
					}
					if bad != "" {
						t.Errorf("%s (variant %d) / %s: %s: exit %d, stdout %q, stderr %q", v.class, i, c.name, bad, code, stdout, stderr)
						result = "FAILED"
					}
					mu.Lock()
					counts[outcome{v.class, c.name, result}]++
					mu.Unlock()
					os.RemoveAll(work)
				}
			}
		})
	}
	for i := range vs {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	var rows []string
	for o, k := range counts {
		rows = append(rows, fmt.Sprintf("| %s | %s | %s | %d |", o.class, o.cmd, o.result, k))
	}
	sort.Strings(rows)
	t.Logf("%d variants x %d commands\n| damage | command | result | runs |\n|---|---|---|---|\n%s", len(vs), len(commands), strings.Join(rows, "\n"))
}

// runChildCLI runs etcdkit (this test binary as the CLI) with 4 GiB of
// address space and a minute; err reports a hang or a failure to run.
func runChildCLI(args []string) (code int, stdout, stderr string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], args...)
	cmd.Env = append(os.Environ(), cliEnv+"=1", rlimitEnv+"="+strconv.FormatUint(4<<30, 10))
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	runErr := cmd.Run()
	if ctx.Err() != nil {
		return -1, o.String(), e.String(), fmt.Errorf("hung: killed after a minute")
	}
	if cmd.ProcessState == nil || cmd.ProcessState.ExitCode() < 0 {
		return -1, o.String(), e.String(), fmt.Errorf("did not exit normally: %v", runErr)
	}
	return cmd.ProcessState.ExitCode(), o.String(), e.String(), nil
}
