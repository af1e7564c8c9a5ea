package main

import (
	"io/fs"

	"github.com/etcdkit/etcdkit/hashkv"
	"github.com/etcdkit/etcdkit/internal/boltdb"
	"github.com/etcdkit/etcdkit/internal/etcdfmt"
	"github.com/etcdkit/etcdkit/snapshot"
)

// errorCodes maps the errors of the capability packages to exit codes.
var errorCodes = []struct {
	code int
	errs []error
}{
	{exitInUse, []error{boltdb.ErrInUse}},
	{exitCorrupt, []error{snapshot.ErrIntegrity, boltdb.ErrDamaged, etcdfmt.ErrBadRevKey}},
	{exitInput, []error{fs.ErrNotExist, boltdb.ErrNotBolt, hashkv.ErrCompacted, hashkv.ErrFutureRev}},
}
