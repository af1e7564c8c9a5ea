package testetcd

import (
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"testing"
)

// StartChild re-runs the test binary as a child process with env set to
// spec as JSON; the package's TestMain sees env and runs the child's side
// (so a test can kill it at a chosen moment). It returns the running
// command, its stdout and its collected stderr.
func StartChild(t testing.TB, env string, spec any) (*exec.Cmd, io.Reader, *strings.Builder) {
	t.Helper()
	b, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), env+"="+string(b))
	stderr := &strings.Builder{}
	cmd.Stderr = stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd, out, stderr
}

// RunChild is the start of a TestMain whose tests use StartChild: in the
// child (env set), it runs child with the spec and exits with its code;
// otherwise it returns at once.
func RunChild(env string, child func(spec string) int) {
	if spec := os.Getenv(env); spec != "" {
		os.Exit(child(spec))
	}
}

// LimitFileSize makes writes past n bytes fail (EFBIG), as they would on a
// full disk: RLIMIT_FSIZE with its signal ignored. For child processes.
func LimitFileSize(n uint64) error {
	signal.Ignore(syscall.SIGXFSZ)
	return syscall.Setrlimit(syscall.RLIMIT_FSIZE, &syscall.Rlimit{Cur: n, Max: n})
}

// DirNames lists a directory's entries, sorted.
func DirNames(t testing.TB, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	return names
}
