// Command etcdkit is the backup, restore and maintenance toolkit for etcd v3.
// This package holds only the command line: flags, output and exit codes.
package main

import (
	"os"
)

func main() {
	os.Exit(run(os.Args, os.Stdout, os.Stderr))
}
