package main

import (
	"io/fs"

	"github.com/etcdkit/etcdkit/cluster"
	"github.com/etcdkit/etcdkit/hashkv"
	"github.com/etcdkit/etcdkit/internal/boltdb"
	"github.com/etcdkit/etcdkit/internal/etcdfmt"
	"github.com/etcdkit/etcdkit/internal/fsutil"
	"github.com/etcdkit/etcdkit/restore"
	"github.com/etcdkit/etcdkit/snapshot"
)

// errorCodes maps the errors of the capability packages to exit codes.
var errorCodes = []struct {
	code int
	errs []error
}{
	{exitInUse, []error{boltdb.ErrInUse}},
	{exitMismatch, []error{restore.ErrHashMismatch}},
	{exitRefused, []error{restore.ErrTargetExists, fsutil.ErrNoSpace}},
	{exitUsage, []error{restore.ErrConfig}},
	{exitUnavailable, []error{cluster.ErrUnreachable}},
	{exitCorrupt, []error{snapshot.ErrIntegrity, boltdb.ErrDamaged, etcdfmt.ErrBadRevKey}},
	{exitInput, []error{fs.ErrNotExist, boltdb.ErrNotBolt, restore.ErrNoTrailer, restore.ErrNotEtcd, hashkv.ErrCompacted, hashkv.ErrFutureRev}},
}
