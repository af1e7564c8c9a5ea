// Command bench compares etcdkit with etcdutl on the same >1 GB snapshot
// written by a real etcd: median wall time and peak RSS over alternating
// runs, and a floor (one sequential read of the file). It writes the table
// to -out. Run it with `make bench`.
package main

import (
	"crypto/sha256"
	"encoding/json"
	"flag"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

var (
	cacheDir  = flag.String("cache", filepath.Join(os.Getenv("HOME"), ".cache/etcdkit/bench"), "where the generated snapshot is kept")
	etcdBins  = flag.String("etcd-bins", "", "directory with etcd, etcdctl and etcdutl (3.7)")
	etcdkit   = flag.String("etcdkit", "bin/etcdkit", "etcdkit binary")
	out       = flag.String("out", "docs/bench.md", "markdown file for the results")
	runs      = flag.Int("runs", 5, "runs per tool and command (alternating)")
	keys      = flag.Int("keys", 400_000, "distinct keys")
	rounds    = flag.Int("rounds", 3, "revisions per key")
	valueSize = flag.Int("value-size", 900, "bytes per value")
	only      = flag.String("only", "", "comma-separated case names to run (default: all)")
	versitygw = flag.String("versitygw", "", "versitygw binary (the S3 server of the restore-from-S3 row)")
	large     = flag.Bool("large", false, "the large run (make bench-large): the offline and repository rows only, etcdutl on the same file, outputs removed between the tools, seconds per GB")
)

// sample is one measured run.
type sample struct {
	wall time.Duration
	rss  int64 // peak RSS in bytes
}

// benchCase is one command measured for both tools. prepare returns the
// command lines (program first) for run i (it may name fresh output
// directories); cleanup runs after each run.
type benchCase struct {
	name    string
	large   bool // in the large run too
	prepare func(i int) (kit, utl []string)
	cleanup func()
	// between, in the large run, removes the first tool's output before
	// the second runs: the disk holds one at a time.
	between func()
	floor   func() time.Duration // optional reference, measured in the same run
	target  string
	// after, when set, adds rows under the case's from its medians.
	after func(kit, peer sample, floor time.Duration) []string
}

func main() {
	flag.Parse()
	log.SetFlags(0)
	if *etcdBins == "" {
		log.Fatal("-etcd-bins is required")
	}
	if err := os.MkdirAll(*cacheDir, 0o755); err != nil {
		log.Fatal(err)
	}
	snap := ensureSnapshot()
	if *only == "gen-k8s" {
		log.Print(ensureK8sSnapshot())
		return
	}
	if *only == "latency" {
		writeLatency(latencyBench())
		return
	}
	if *only == "gen-compacted" {
		log.Print(ensureCompacted(snap))
		return
	}
	// etcdutl opens some inputs read-write; give it its own copy.
	// etcdutl opens its input read-write (hashkv and status write to it,
	// which breaks the snapshot's sha256 trailer): it gets its own copy, in
	// the large run one made per run and removed after it.
	utlSnap := filepath.Join(*cacheDir, "snapshot-etcdutl.db")
	utlCopy := func() {}
	utlDone := func() {}
	if *large {
		utlCopy = func() { copySynced(snap, utlSnap) }
		utlDone = func() { os.Remove(utlSnap) }
	} else {
		if err := copyFile(snap, utlSnap); err != nil {
			log.Fatal(err)
		}
		defer os.Remove(utlSnap)
		warm(utlSnap)
	}
	fi, _ := os.Stat(snap)
	warm(snap)
	etcdutl := filepath.Join(*etcdBins, "etcdutl")

	seqRead := func() time.Duration { return timeIt(func() { warm(snap) }) }
	// Honest floors (issue 20): the work no implementation avoids — one
	// read of the file plus the CRC-32C (status, hashkv) or the sha256
	// (verify) over every byte of it.
	crcRead := func() time.Duration {
		return timeIt(func() { hashFile(snap, crc32.New(crc32.MakeTable(crc32.Castagnoli))) })
	}
	shaRead := func() time.Duration { return timeIt(func() { hashFile(snap, sha256.New()) }) }
	kit := func(args ...string) []string { return append([]string{*etcdkit}, args...) }
	utl := func(args ...string) []string { return append([]string{etcdutl}, args...) }
	restoreDir := filepath.Join(*cacheDir, "restore")
	cleanRestore := func() { os.RemoveAll(restoreDir); syncFS(*cacheDir) }
	const cluster3 = "m1=http://127.0.0.1:2380,m2=http://127.0.0.1:2381,m3=http://127.0.0.1:2382"
	compacted := ensureCompacted(snap)
	defragDir := filepath.Join(*cacheDir, "defrag")
	var live string
	// The path an operator takes today to read a snapshot: restore it with
	// etcdutl, start etcd on it, ask etcdctl (time to the answer).
	opDir := filepath.Join(restoreDir, "op")
	etcdctl := filepath.Join(*etcdBins, "etcdctl") + " --endpoints http://127.0.0.1:23790 --command-timeout 10m"
	operator := func(snap, query string) []string {
		const peer = "--initial-cluster default=http://127.0.0.1:23800 --initial-advertise-peer-urls http://127.0.0.1:23800"
		script := fmt.Sprintf(`set -e
%[1]s snapshot restore %[2]s --data-dir %[3]s %[4]s >/dev/null 2>&1
%[5]s --data-dir %[3]s --listen-client-urls http://127.0.0.1:23790 --advertise-client-urls http://127.0.0.1:23790 --listen-peer-urls http://127.0.0.1:23800 %[4]s --quota-backend-bytes 8589934592 --log-level error & E=$!
trap 'kill $E 2>/dev/null; wait $E 2>/dev/null || true' EXIT
until %[6]s endpoint health >/dev/null 2>&1; do sleep 0.05; done
%[7]s`, etcdutl, snap, opDir, peer, filepath.Join(*etcdBins, "etcd"), etcdctl, query)
		return []string{"/bin/sh", "-c", script}
	}
	const benchPrefix = "/registry/bench/ns-007/"
	var repo string // the drill's, made on first use
	drillRepo := func() string {
		if repo == "" {
			repo = ensureRepo(snap)
		}
		return repo
	}
	var drillServing []float64
	var defragRemove, kitStart []time.Duration
	historyLines := 0
	cases := []benchCase{
		{
			name: "snapshot status", large: true, target: "≤ 0.6x",
			prepare: func(int) ([]string, []string) {
				utlCopy()
				return kit("snapshot", "status", snap), utl("snapshot", "status", utlSnap)
			},
			// The floors run in the bench's own process; etcdkit's times
			// include starting one, measured beside them.
			floor: func() time.Duration {
				start := time.Now()
				if err := exec.Command(*etcdkit, "--version").Run(); err != nil {
					log.Fatal(err)
				}
				kitStart = append(kitStart, time.Since(start))
				return crcRead()
			},
			after: func(kit, _ sample, floor time.Duration) []string {
				st := medianDuration(kitStart)
				return []string{fmt.Sprintf("| starting etcdkit alone (`etcdkit --version`; a 72 MB binary), inside every etcdkit time, not in the floors | %.2fs | | | | | | | status without it: %.2fx the floor |",
					st.Seconds(), (kit.wall-st).Seconds()/floor.Seconds())}
			},
			cleanup: func() { utlDone() },
		},
		{
			name: "hashkv", large: true, target: "≤ 0.8x",
			prepare: func(int) ([]string, []string) {
				utlCopy()
				return kit("hashkv", snap), utl("hashkv", utlSnap)
			},
			floor:   crcRead,
			cleanup: func() { utlDone() },
		},
		{
			name: "verify snapshot (etcdutl: snapshot status)", large: true, target: "≤ 1.0x",
			prepare: func(int) ([]string, []string) {
				utlCopy()
				return kit("verify", "snapshot", snap), utl("snapshot", "status", utlSnap)
			},
			floor:   shaRead,
			cleanup: func() { utlDone() },
		},
		{
			name: "snapshot restore", large: true, target: "≤ 0.6x, ≤ 1.5x floor",
			prepare: func(i int) ([]string, []string) {
				return kit("snapshot", "restore", snap, "--data-dir", filepath.Join(restoreDir, "kit")),
					utl("snapshot", "restore", snap, "--data-dir", filepath.Join(restoreDir, "utl"))
			},
			cleanup: cleanRestore,
			between: cleanRestore,
			floor: func() time.Duration {
				defer cleanRestore()
				return copySynced(snap, filepath.Join(restoreDir, "copy.db"))
			},
		},
		{
			name: "snapshot restore (3 members)", large: true, target: "≤ 0.6x",
			prepare: func(i int) ([]string, []string) {
				var sh []string
				for _, m := range strings.Split(cluster3, ",") {
					name, url, _ := strings.Cut(m, "=")
					sh = append(sh, strings.Join(utl("snapshot", "restore", snap, "--name", name, "--initial-cluster", cluster3,
						"--initial-advertise-peer-urls", url, "--data-dir", filepath.Join(restoreDir, "utl", name)), " "))
				}
				return kit("snapshot", "restore", snap, "--output-dir", filepath.Join(restoreDir, "kit"), "--initial-cluster", cluster3),
					[]string{"/bin/sh", "-ec", strings.Join(sh, "\n")}
			},
			cleanup: cleanRestore,
			between: cleanRestore,
		},
		{
			name: "defrag (compacted db)", large: true, target: "≤ 0.35x, ≤ 1.5x floor, ≤ 64 MiB",
			prepare: func(i int) ([]string, []string) {
				for _, tool := range []string{"kit", "utl"} {
					copySynced(compacted, filepath.Join(defragDir, tool, "member", "snap", "db"))
				}
				if live == "" { // the floor's input: the live data, as one defrag leaves it
					live = filepath.Join(*cacheDir, "defragged.db")
					copySynced(compacted, live)
					if out, err := exec.Command(*etcdkit, "defrag", "--db", live).CombinedOutput(); err != nil {
						log.Fatalf("defrag: %v\n%s", err, out)
					}
				}
				return kit("defrag", "--data-dir", filepath.Join(defragDir, "kit")), utl("defrag", "--data-dir", filepath.Join(defragDir, "utl"))
			},
			cleanup: func() { os.RemoveAll(defragDir); syncFS(*cacheDir) },
			// One copy of the live data with fsync: the least a defrag writes.
			// Measured beside it, not in it: removing the replaced file,
			// which both tools do at the end.
			floor: func() time.Duration {
				defer func() { os.RemoveAll(defragDir); syncFS(*cacheDir) }()
				old := filepath.Join(defragDir, "old.db")
				copySynced(compacted, old)
				start := time.Now()
				if err := os.Remove(old); err != nil {
					log.Fatal(err)
				}
				defragRemove = append(defragRemove, time.Since(start))
				return copySynced(live, filepath.Join(defragDir, "copy.db"))
			},
			after: func(kit, _ sample, _ time.Duration) []string {
				rm := medianDuration(defragRemove)
				return []string{fmt.Sprintf("| defrag: removing the replaced file alone (%s; %s), inside both tools' times above, not in the floor | %.2fs | | | | | | | etcdkit without it: %.2fs |",
					sizeOf(compacted), mountOptions(compacted), rm.Seconds(), (kit.wall - rm).Seconds())}
			},
		},
		{
			name: "backup drill: restore, boot and check (peer: etcdutl snapshot restore alone)", target: "report",
			prepare: func(int) ([]string, []string) {
				// Time to a serving member, from the drill's own report.
				if err := os.MkdirAll(restoreDir, 0o755); err != nil {
					log.Fatal(err)
				}
				out, err := exec.Command(*etcdkit, "backup", "drill", "--repo", drillRepo(), "--scratch-dir", restoreDir, "-w", "json").Output()
				if err != nil {
					log.Fatalf("backup drill: %v", err)
				}
				var r struct{ ServingSeconds float64 }
				if err := json.Unmarshal(out, &r); err != nil {
					log.Fatal(err)
				}
				drillServing = append(drillServing, r.ServingSeconds)
				return kit("backup", "drill", "--repo", drillRepo(), "--scratch-dir", restoreDir),
					utl("snapshot", "restore", snap, "--data-dir", filepath.Join(restoreDir, "utl"))
			},
			cleanup: cleanRestore,
		},
		{
			name: "inspect get --prefix --keys-only (peer: etcdutl restore + etcd + etcdctl get)", target: "≤ 1.5x floor, ≤ 128 MiB",
			prepare: func(int) ([]string, []string) {
				return kit("inspect", "get", benchPrefix, "--prefix", "--keys-only", "--db", snap),
					operator(snap, etcdctl+" get "+benchPrefix+" --prefix --keys-only >/dev/null")
			},
			cleanup: cleanRestore,
			floor:   seqRead,
		},
		{
			name: "inspect du (peer: etcdutl restore + etcd + etcdctl get of all keys)", large: true, target: "≤ 1.5x floor, ≤ 128 MiB",
			prepare: func(int) ([]string, []string) {
				return kit("inspect", "du", "--db", snap), operator(snap, etcdctl+` get "" --prefix --keys-only >/dev/null`)
			},
			cleanup: cleanRestore,
			between: cleanRestore,
			floor:   seqRead,
		},
		{
			name: "inspect history of one prefix (peer: etcdutl restore + etcd + etcdctl watch --rev 1)", target: "≤ 1.5x floor, ≤ 128 MiB",
			prepare: func(int) ([]string, []string) {
				if historyLines == 0 {
					out, err := exec.Command(*etcdkit, "inspect", "history", benchPrefix, "--prefix", "--db", snap).Output()
					if err != nil {
						log.Fatalf("inspect history: %v", err)
					}
					historyLines = strings.Count(string(out), "\n")
				}
				watch := fmt.Sprintf(`%s watch --rev 1 --prefix %s > %s/watch.out & W=$!
while [ "$(wc -l < %s/watch.out)" -lt %d ]; do sleep 0.01; done
kill $W`, etcdctl, benchPrefix, opDir, opDir, historyLines)
				return kit("inspect", "history", benchPrefix, "--prefix", "--db", snap), operator(snap, watch)
			},
			cleanup: cleanRestore,
			floor:   seqRead,
		},
	}

	// Restores from the repository: zstd + age, from a local directory and
	// from an S3 server on loopback; the floor is a local restore of the
	// raw snapshot by etcdkit, measured in the same run.
	var stops []func()
	defer func() {
		for _, stop := range stops {
			stop()
		}
	}()
	var encRepo, s3URL, identity string
	repoSetup := func() {
		if encRepo != "" {
			return
		}
		var recipient string
		identity, recipient = ensureAgeKey()
		encRepo = ensureRepoAs(snap, "repo-zstd-age", "--compression", "zstd", "--encrypt-to", recipient)
		var stop func()
		s3URL, stop = startS3(encRepo, *versitygw)
		stops = append(stops, stop)
	}
	localRestore := func() time.Duration {
		defer cleanRestore()
		return measure(kit("snapshot", "restore", snap, "--data-dir", filepath.Join(restoreDir, "floor"))).wall
	}
	for _, where := range []string{"local", "S3"} {
		cases = append(cases, benchCase{
			large: true,
			name:  "snapshot restore from the repository (zstd + age; " + where + "; peer: etcdutl restore of the raw snapshot)", target: "≤ 1.3x floor (a local restore)",
			prepare: func(int) ([]string, []string) {
				repoSetup()
				url := encRepo
				if where == "S3" {
					url = s3URL
				}
				return kit("snapshot", "restore", "--repo", url, "--identity", identity, "--data-dir", filepath.Join(restoreDir, "kit")),
					utl("snapshot", "restore", snap, "--data-dir", filepath.Join(restoreDir, "utl"))
			},
			cleanup: cleanRestore,
			between: cleanRestore,
			floor:   localRestore,
		})
	}

	// backup create against etcdctl snapshot save, from etcd 3.7 serving the
	// data (started on first use): to a local repository and to the S3
	// server, zstd, with and without age. etcdkit runs with TMPDIR set to
	// an empty directory, which must still be empty after each run: a
	// create stages nothing on disk.
	var serveURL string
	createTmp := filepath.Join(*cacheDir, "create-tmp")
	checkTmp := func() {
		if left, _ := os.ReadDir(createTmp); len(left) > 0 {
			log.Fatalf("backup create left %s in its TMPDIR %s", left[0].Name(), createTmp)
		}
	}
	for _, where := range []string{"local", "S3"} {
		for _, enc := range []string{"zstd", "zstd + age"} {
			createRepo := filepath.Join(*cacheDir, "create-repo")
			var runs int
			cases = append(cases, benchCase{
				name: "backup create (" + enc + "; " + where + " repository; peer: etcdctl snapshot save)", target: "≤ 1.1x, 0 B staged, ≤ 128 MiB", large: true,
				prepare: func(int) ([]string, []string) {
					if serveURL == "" {
						var stop func()
						serveURL, stop = serveSnapshot(snap)
						stops = append(stops, stop)
					}
					if err := os.MkdirAll(restoreDir, 0o755); err != nil {
						log.Fatal(err)
					}
					checkTmp() // the previous run's
					if err := os.MkdirAll(createTmp, 0o755); err != nil {
						log.Fatal(err)
					}
					os.Setenv("TMPDIR", createTmp)
					url := createRepo
					if where == "S3" {
						repoSetup()
						runs++
						url = strings.Replace(s3URL, "/repo?", fmt.Sprintf("/create-%d?", runs), 1)
					}
					args := []string{"backup", "create", "--repo", url, "--endpoints", serveURL, "--command-timeout", "30m"}
					if enc == "zstd + age" {
						_, recipient := ensureAgeKey()
						args = append(args, "--encrypt-to", recipient)
					}
					return kit(args...),
						[]string{filepath.Join(*etcdBins, "etcdctl"), "--endpoints", serveURL, "--command-timeout", "30m", "snapshot", "save", filepath.Join(restoreDir, "etcdctl.db")}
				},
				cleanup: func() { checkTmp(); os.Unsetenv("TMPDIR"); os.RemoveAll(createRepo); cleanRestore() },
				between: func() { checkTmp(); os.RemoveAll(createRepo); cleanRestore(); os.MkdirAll(restoreDir, 0o755) },
			})
		}
	}

	// Point-in-time restore: the snapshot as a full backup and a log of
	// pitrEvents events after it (built once), against a restore of the
	// backup alone: the difference is the log's share.
	var pd *pitrData
	pitrSetup := func() pitrData {
		if pd == nil {
			d := ensurePITR(snap)
			pd = &d
		}
		return *pd
	}
	cases = append(cases, benchCase{
		name:   "point-in-time restore: the snapshot as a backup + a revision log of 1M events (zstd; local repository; peer: etcdkit restore of the backup alone)",
		target: "report",
		prepare: func(int) ([]string, []string) {
			d := pitrSetup()
			return kit("snapshot", "restore", "--repo", d.Repo, "--to-revision", fmt.Sprint(d.To), "--data-dir", filepath.Join(restoreDir, "kit")),
				kit("snapshot", "restore", "--repo", d.Repo, "--backup", d.Backup, "--data-dir", filepath.Join(restoreDir, "utl"))
		},
		cleanup: cleanRestore,
		between: cleanRestore,
		after:   func(k, u sample, _ time.Duration) []string { return []string{pitrNote(*pd, k, u)} },
	})

	// The Kubernetes rows read their own data set, made on first use.
	var k8sSnap string
	k8s := func() string {
		if k8sSnap == "" {
			k8sSnap = ensureK8sSnapshot()
			warm(k8sSnap)
		}
		return k8sSnap
	}
	k8sRead := func() time.Duration { return timeIt(func() { warm(k8s()) }) }
	cases = append(cases,
		benchCase{
			name: "inspect k8s summary (peer: etcdutl restore + etcd + etcdctl get of all /registry keys; auger is not in the Go module proxy)", target: "≤ 1.5x floor, ≤ 128 MiB",
			prepare: func(int) ([]string, []string) {
				return kit("inspect", "k8s", "summary", "--db", k8s()), operator(k8s(), etcdctl+" get /registry/ --prefix --keys-only >/dev/null")
			},
			cleanup: cleanRestore,
			floor:   k8sRead,
		},
		benchCase{
			name: "inspect k8s get configmaps -A -o yaml (peer: etcdutl restore + etcd + etcdctl get of the undecoded values)", target: "≤ 1.5x floor, ≤ 128 MiB",
			prepare: func(int) ([]string, []string) {
				return kit("inspect", "k8s", "get", "configmaps", "-A", "-o", "yaml", "--db", k8s()),
					operator(k8s(), etcdctl+" get /registry/configmaps/ --prefix >/dev/null")
			},
			cleanup: cleanRestore,
			floor:   k8sRead,
		},
	)

	var rows []string
	for _, c := range cases {
		if *only != "" && !strings.Contains(","+*only+",", ","+c.name+",") || *large && !c.large {
			continue
		}
		log.Printf("== %s", c.name)
		var kitS, utlS []sample
		var floors []time.Duration
		for i := 0; i < *runs; i++ {
			kitArgs, utlArgs := c.prepare(i)
			// Alternate which tool goes first so neither always gets the warmer cache.
			order := []bool{true, false}
			if i%2 == 1 {
				order = []bool{false, true}
			}
			for j, isKit := range order {
				if isKit {
					kitS = append(kitS, measure(kitArgs))
				} else {
					utlS = append(utlS, measure(utlArgs))
				}
				if *large && j == 0 && c.between != nil {
					c.between()
				}
			}
			if c.cleanup != nil {
				c.cleanup()
			}
			if c.floor != nil {
				floors = append(floors, c.floor())
			}
		}
		k, u := median(kitS), median(utlS)
		floor, vsFloor := "-", "-"
		var f time.Duration
		if len(floors) > 0 {
			f = medianDuration(floors)
			floor, vsFloor = fmtDur(f), fmt.Sprintf("%.2fx", float64(k.wall)/float64(f))
		}
		kitT, utlT := fmtDur(k.wall), fmtDur(u.wall)
		if *large { // and seconds per GB of the snapshot
			gb := float64(fi.Size()) / 1e9
			kitT += fmt.Sprintf(" (%.2f s/GB)", k.wall.Seconds()/gb)
			utlT += fmt.Sprintf(" (%.2f s/GB)", u.wall.Seconds()/gb)
		}
		row := fmt.Sprintf("| %s | %s | %s | %.2fx | %s | %s | %s | %s | %s |", c.name,
			kitT, utlT, float64(k.wall)/float64(u.wall), c.target,
			fmtMiB(k.rss), fmtMiB(u.rss), floor, vsFloor)
		log.Print(row)
		rows = append(rows, row)
		if c.after != nil {
			rows = append(rows, c.after(k, u, f)...)
		}
	}
	if len(drillServing) > 0 {
		sort.Float64s(drillServing)
		rows = append(rows, fmt.Sprintf("| backup drill: time to a serving member (median, from its report) | %.2fs | | | | | | | |", drillServing[len(drillServing)/2]))
	}
	if _, err := os.Stat(*out); err == nil && *only != "" {
		mergeReport(rows)
		return
	}
	writeReport(snap, fi.Size(), rows)
}

// mergeReport replaces, in the existing report's main table, the rows of
// the cases a -only run measured (appending new ones to that table), and
// notes the date.
func mergeReport(rows []string) {
	b, err := os.ReadFile(*out)
	if err != nil {
		log.Fatalf("-only updates an existing %s: %v", *out, err)
	}
	const note = "Rows rerun with -only on "
	var lines []string
	for _, l := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
		if !strings.HasPrefix(l, note) {
			lines = append(lines, l)
		}
	}
	end := -1 // after the main table's last row
	for i, l := range lines {
		if strings.HasPrefix(l, "| command |") {
			for end = i + 1; end < len(lines) && strings.HasPrefix(lines[end], "|"); end++ {
			}
			break
		}
	}
	if end < 0 {
		log.Fatalf("%s has no results table", *out)
	}
	for _, r := range rows {
		name := strings.SplitN(r, " | ", 2)[0] + " | "
		replaced := false
		for i := 0; i < end; i++ {
			if strings.HasPrefix(lines[i], name) {
				lines[i], replaced = r, true
			}
		}
		if !replaced {
			lines = append(lines[:end], append([]string{r}, lines[end:]...)...)
			end++
		}
	}
	lines = append(lines[:end], append([]string{"", note + time.Now().UTC().Format("2006-01-02") + "."}, lines[end:]...)...)
	if err := os.WriteFile(*out, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		log.Fatal(err)
	}
	fmt.Println(strings.Join(rows, "\n"))
}

// measure runs a command to completion and returns its wall time and peak
// RSS; it exits the bench if the command fails.
func measure(argv []string) sample {
	bin, args := argv[0], argv[1:]
	cmd := exec.Command(bin, args...)
	cmd.Stdout = io.Discard
	var stderr strings.Builder
	cmd.Stderr = &stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		log.Fatalf("%s %s: %v\n%s", filepath.Base(bin), strings.Join(args, " "), err, stderr.String())
	}
	wall := time.Since(start)
	ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	return sample{wall: wall, rss: ru.Maxrss * 1024}
}

func medianDuration(d []time.Duration) time.Duration {
	w := append([]time.Duration(nil), d...)
	slices.Sort(w)
	return w[len(w)/2]
}

// sizeOf is a file's size in GB, for a table's notes.
func sizeOf(path string) string {
	fi, err := os.Stat(path)
	if err != nil {
		log.Fatal(err)
	}
	return fmt.Sprintf("%.2f GB", float64(fi.Size())/1e9)
}

// mountOptions names the file system of path and whether it is mounted
// with discard, from /proc/mounts (the longest mount point holding path).
func mountOptions(path string) string {
	b, err := os.ReadFile("/proc/mounts")
	if err != nil {
		return "file system unknown"
	}
	abs, _ := filepath.Abs(path)
	best, desc := "", "file system unknown"
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 4 {
			continue
		}
		mp := f[1]
		if (abs == mp || strings.HasPrefix(abs, strings.TrimSuffix(mp, "/")+"/")) && len(mp) >= len(best) {
			best, desc = mp, f[2]
			if slices.Contains(strings.Split(f[3], ","), "discard") {
				desc += " mounted with discard: freed blocks are trimmed as the file goes"
			}
		}
	}
	return desc
}

func median(s []sample) sample {
	w := append([]sample(nil), s...)
	sort.Slice(w, func(i, j int) bool { return w[i].wall < w[j].wall })
	m := w[len(w)/2]
	r := append([]sample(nil), s...)
	sort.Slice(r, func(i, j int) bool { return r[i].rss < r[j].rss })
	m.rss = r[len(r)-1].rss // report the worst peak RSS
	return m
}

// hashFile reads a file once through h.
func hashFile(path string, h hash.Hash) {
	f, err := os.Open(path)
	if err != nil {
		log.Fatal(err)
	}
	defer f.Close()
	if _, err := io.CopyBuffer(h, f, make([]byte, 1<<20)); err != nil {
		log.Fatal(err)
	}
}

func timeIt(f func()) time.Duration { s := time.Now(); f(); return time.Since(s) }

// warm reads a file once sequentially (it also serves as the floor).
func warm(path string) {
	f, err := os.Open(path)
	if err != nil {
		log.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	for {
		if _, err := f.Read(buf); err != nil {
			break
		}
	}
}

// copySynced copies src to dst and fsyncs it: the floor of a restore.
func copySynced(src, dst string) time.Duration {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		log.Fatal(err)
	}
	start := time.Now()
	if err := copyFile(src, dst); err != nil {
		log.Fatal(err)
	}
	f, err := os.OpenFile(dst, os.O_RDWR, 0)
	if err != nil {
		log.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		log.Fatal(err)
	}
	f.Close()
	return time.Since(start)
}

// syncFS flushes the file system of dir, so that one run's deferred
// writeback does not slow the next.
func syncFS(dir string) {
	if f, err := os.Open(dir); err == nil {
		_ = unix.Syncfs(int(f.Fd()))
		f.Close()
	}
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	o, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(o, in); err != nil {
		o.Close()
		return err
	}
	return o.Close()
}

func fmtDur(d time.Duration) string { return fmt.Sprintf("%.2fs", d.Seconds()) }
func fmtMiB(n int64) string         { return fmt.Sprintf("%d MiB", n>>20) }

func writeReport(snap string, size int64, rows []string) {
	var b strings.Builder
	fmt.Fprintf(&b, "# etcdkit vs etcdutl\n\nWritten by `make bench` on %s.\n\n", time.Now().UTC().Format("2006-01-02"))
	fmt.Fprintf(&b, "- machine: %s, %d cores, %s RAM, %s/%s, %s\n", cpuModel(), runtime.NumCPU(), memTotal(), runtime.GOOS, runtime.GOARCH, runtime.Version())
	ver, _ := exec.Command(filepath.Join(*etcdBins, "etcdutl"), "version").Output()
	fmt.Fprintf(&b, "- etcdutl: %s\n", strings.TrimSpace(strings.SplitN(string(ver), "\n", 2)[0]))
	fmt.Fprintf(&b, "- data: snapshot of %.2f GB from a real etcd 3.7: %d keys × %d revisions, %d-byte values (`%s`)\n",
		float64(size)/1e9, *keys, *rounds, *valueSize, filepath.Base(snap))
	fmt.Fprintf(&b, "- defrag data: that snapshot restored, booted on etcd 3.7 and compacted at its latest revision, so about two thirds of its pages are free (`compacted.db`, a fresh copy per run)\n")
	fmt.Fprintf(&b, "- Kubernetes data (the `inspect k8s` rows): `k8s.db`, a snapshot from a real etcd 3.7 of about 560k values written as kube-apiserver stores them (protobuf envelope from k8s.io/apimachinery, custom resources as JSON, a third of the secrets AES-CBC encrypted by k8s.io/apiserver's transformer) in %d namespaces; floor = one plain read of it; auger is not served by the Go module proxy, so the peer is the operator path (etcdutl restore + etcd + etcdctl, values not decoded)\n", k8sNamespaces)
	b.WriteString("- backup create rows: a real etcd 3.7 serving a restore of the snapshot on loopback; `etcdkit backup create` (one pass: nothing staged, its TMPDIR an empty directory checked empty after every run) into a local repository or into versitygw on loopback (S3), against `etcdctl snapshot save` of the same member to a file\n")
	fmt.Fprintf(&b, "- point-in-time data (the point-in-time rows): the snapshot served by a real etcd 3.7, backed up with `etcdkit backup create`, then %d changes written in transactions of 1 to 16 (puts of about 230-byte JSON values over 200k keys, a tenth deletes) from 32 clients while `etcdkit backup log` logged them (zstd, local repository); the peer column is etcdkit's restore of that backup alone, so the difference is the log's share\n", pitrEvents)
	fmt.Fprintf(&b, "- method: %d runs per tool, alternating which goes first, page cache warm; median wall time, worst peak RSS (getrusage maxrss); floor = one read of the file with the CRC-32C over it (status, hashkv) or its sha256 (verify), one copy of it with fsync (restore), or one plain read (inspect), measured in the same run; etcdutl has no multi-member restore, so it runs once per member; for the inspect rows the etcdutl column is the path an operator takes today to get the same answer from a snapshot (etcdutl snapshot restore, start etcd 3.7 on it, ask etcdctl; time to the answer, peak RSS of the largest process) and the floor is one sequential read of the file; the drill rows compare a whole drill of a backup of the same data (restore from the repository, boot the embedded etcd, checks) with a plain etcdutl restore of the snapshot\n\n", *runs)
	b.WriteString("| command | etcdkit | etcdutl | ratio | target | etcdkit peak RSS | etcdutl peak RSS | floor | etcdkit / floor |\n|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range rows {
		b.WriteString(r + "\n")
	}
	if err := os.WriteFile(*out, []byte(b.String()), 0o644); err != nil {
		log.Fatal(err)
	}
	fmt.Print(b.String())
}

func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "model name") {
			return strings.TrimSpace(strings.SplitN(l, ":", 2)[1])
		}
	}
	return "unknown CPU"
}

func memTotal() string {
	b, _ := os.ReadFile("/proc/meminfo")
	var kb int64
	fmt.Sscanf(strings.TrimPrefix(strings.SplitN(string(b), "\n", 2)[0], "MemTotal:"), "%d", &kb)
	return fmt.Sprintf("%d GiB", (kb+(1<<19))>>20)
}

// writeLatency puts the latency table into the report, replacing the
// section a previous run wrote.
func writeLatency(rows []string) {
	b, _ := os.ReadFile(*out)
	text := string(b)
	const begin, end = "<!-- latency -->", "<!-- /latency -->"
	if i, j := strings.Index(text, begin), strings.Index(text, end); i >= 0 && j > i {
		text = text[:i] + text[j+len(end):]
	}
	var sec strings.Builder
	fmt.Fprintf(&sec, "%s\n## What maintenance costs the cluster\n\nWritten by `go run ./tools/bench -only latency` on %s, same machine. ", begin, time.Now().UTC().Format("2006-01-02"))
	sec.WriteString("A real 3-member etcd 3.7 cluster on loopback (fsync on, one disk shared by the three members and the tools), filled with 300k keys of 1 KB written twice and compacted (about 600 MB of db per member); 16 clients write 1 KB values at a fixed 400 writes/s for 15 s per row while the maintenance runs again and again; latency of every write (a write the clients could not start on time is dropped from the rate, so a lower rate means writes were held up).\n\n")
	sec.WriteString("| while | throughput | p50 | p99 | max | maintenance runs in the window |\n|---|---|---|---|---|---|\n")
	for _, r := range rows {
		sec.WriteString(r + "\n")
	}
	sec.WriteString(end + "\n")
	text = strings.TrimRight(text, "\n") + "\n\n" + sec.String()
	if err := os.WriteFile(*out, []byte(text), 0o644); err != nil {
		log.Fatal(err)
	}
	fmt.Print(sec.String())
}
