package main

import (
	"os"
	"strconv"
	"syscall"
	"testing"
)

// cliEnv makes the test binary run as etcdkit itself, so tests can start
// the real command as a process (to kill it, to signal it).
const cliEnv = "ETCDKIT_TEST_RUN_CLI"

// rlimitEnv bounds a CLI child's address space, in bytes.
const rlimitEnv = "ETCDKIT_TEST_RLIMIT_AS"

// TestMain lets tests run the CLI as a child process.
func TestMain(m *testing.M) {
	if os.Getenv(cliEnv) != "" {
		// A child may run with bounded address space, so a command that
		// allocates without bound fails here instead of filling the machine.
		if v, err := strconv.ParseUint(os.Getenv(rlimitEnv), 10, 64); err == nil {
			if err := syscall.Setrlimit(syscall.RLIMIT_AS, &syscall.Rlimit{Cur: v, Max: v}); err != nil {
				panic(err)
			}
		}
		os.Exit(run(append([]string{"etcdkit"}, os.Args[1:]...), os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}
