package main

import (
	"os"
	"testing"
)

// cliEnv makes the test binary run as etcdkit itself, so tests can start
// the real command as a process (to kill it, to signal it).
const cliEnv = "ETCDKIT_TEST_RUN_CLI"

// TestMain lets tests run the CLI as a child process.
func TestMain(m *testing.M) {
	if os.Getenv(cliEnv) != "" {
		os.Exit(run(append([]string{"etcdkit"}, os.Args[1:]...), os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}
