// Command etcdkit is the backup, restore and maintenance toolkit for etcd v3.
// This package holds only the command line: flags, output and exit codes.
package main

import (
	"os"
	"runtime"

	"github.com/etcdkit/etcdkit/cluster"
)

func main() {
	// One processor more than the CPUs: offline commands keep both cores
	// busy walking a db, and the goroutine that bounds the db mapping's
	// resident memory (internal/boltdb) must still run within milliseconds.
	runtime.GOMAXPROCS(runtime.NumCPU() + 1)
	cluster.UseReceivePool()
	os.Exit(run(os.Args, os.Stdout, os.Stderr))
}
