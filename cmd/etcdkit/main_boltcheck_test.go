package main

import (
	"os"
	"testing"

	"github.com/etcdkit/etcdkit/internal/testetcd"
)

// cliEnv makes the test binary run as etcdkit itself, so tests can start
// the real command as a process (to kill it, to signal it).
const cliEnv = "ETCDKIT_TEST_RUN_CLI"

// TestMain lets boltdb.Check re-execute the test binary as its checker, and
// tests run the CLI as a child process.
func TestMain(m *testing.M) {
	if os.Getenv(cliEnv) != "" {
		os.Exit(run(append([]string{"etcdkit"}, os.Args[1:]...), os.Stdout, os.Stderr))
	}
	testetcd.Main(m)
}
