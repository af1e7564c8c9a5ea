package main

import (
	"io/fs"

	"github.com/etcdkit/etcdkit/alarm"
	"github.com/etcdkit/etcdkit/backup"
	"github.com/etcdkit/etcdkit/cluster"
	"github.com/etcdkit/etcdkit/compact"
	"github.com/etcdkit/etcdkit/drill"
	"github.com/etcdkit/etcdkit/hashkv"
	"github.com/etcdkit/etcdkit/inspect"
	"github.com/etcdkit/etcdkit/internal/boltpage"
	"github.com/etcdkit/etcdkit/internal/etcdfmt"
	"github.com/etcdkit/etcdkit/internal/fsutil"
	"github.com/etcdkit/etcdkit/kube"
	"github.com/etcdkit/etcdkit/member"
	"github.com/etcdkit/etcdkit/migrate"
	"github.com/etcdkit/etcdkit/pitr"
	"github.com/etcdkit/etcdkit/quorum"
	"github.com/etcdkit/etcdkit/repo"
	"github.com/etcdkit/etcdkit/restore"
	"github.com/etcdkit/etcdkit/rollingdefrag"
	"github.com/etcdkit/etcdkit/save"
	"github.com/etcdkit/etcdkit/scheduler"
	"github.com/etcdkit/etcdkit/serve"
	"github.com/etcdkit/etcdkit/snapshot"
	"github.com/etcdkit/etcdkit/verify"
)

// errorCodes maps the errors of the capability packages to exit codes.
var errorCodes = []struct {
	code int
	errs []error
}{
	{exitInUse, []error{boltpage.ErrInUse}},
	{exitMismatch, []error{restore.ErrHashMismatch, save.ErrHashKVMismatch, drill.ErrFailed}},
	{exitRefused, []error{restore.ErrTargetExists, fsutil.ErrNoSpace, compact.ErrPastBackup}},
	{exitUsage, []error{restore.ErrConfig, compact.ErrPolicy, rollingdefrag.ErrRule, migrate.ErrTarget, inspect.ErrNoWAL}},
	{exitRefused, []error{migrate.ErrMigrate, backup.ErrAttachmentExists, member.ErrHealthy}},
	{exitInput, []error{member.ErrNoMember, quorum.ErrForeign, pitr.ErrNotCovered}},
	{exitCorrupt, []error{pitr.ErrLog, pitr.ErrFormat}},
	{exitUsage, []error{pitr.ErrConfig}},
	{exitUnavailable, []error{member.ErrNotReady}},
	{exitUsage, []error{backup.ErrAttachment, kube.ErrResource, kube.ErrEncryptionConfig}},
	{exitRefused, []error{kube.ErrExtractDir}},
	{exitInput, []error{kube.ErrNotFound, kube.ErrIncomplete}},
	{exitCorrupt, []error{etcdfmt.ErrWALCorrupt}},
	{exitUnavailable, []error{cluster.ErrUnreachable, cluster.ErrUnhealthy, save.ErrNoMember, alarm.ErrStillFull}},
	{exitCorrupt, []error{verify.ErrCorrupt}},
	{exitMismatch, []error{etcdfmt.ErrTrailer}},
	{exitCorrupt, []error{backup.ErrCorrupt}},
	{exitInput, []error{backup.ErrIdentity, backup.ErrNoBackup, repo.ErrNotFound, repo.ErrURL, repo.ErrAccess, repo.ErrName, fsutil.ErrTooLarge}},
	{exitUsage, []error{backup.ErrRetention, scheduler.ErrConfig, serve.ErrConfig}},
	{exitCorrupt, []error{snapshot.ErrIntegrity, boltpage.ErrIntegrity, boltpage.ErrDamaged, etcdfmt.ErrBadRevKey, etcdfmt.ErrSchema}},
	{exitInput, []error{etcdfmt.ErrNotEtcd, fs.ErrPermission, inspect.ErrCompacted, inspect.ErrFutureRev}},
	{exitInput, []error{fs.ErrNotExist, boltpage.ErrNotBolt, compact.ErrNoClock, restore.ErrNoTrailer, restore.ErrNotEtcd, hashkv.ErrCompacted, hashkv.ErrFutureRev}},
}
