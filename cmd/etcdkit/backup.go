package main

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"time"

	"filippo.io/age"
	"github.com/urfave/cli/v2"

	"github.com/etcdkit/etcdkit/backup"
	"github.com/etcdkit/etcdkit/cluster"
	"github.com/etcdkit/etcdkit/drill"
	"github.com/etcdkit/etcdkit/internal/fsutil"
)

var flagRepo = &cli.StringFlag{Name: "repo", Required: true, EnvVars: []string{"ETCDKIT_REPO"},
	Usage: "repository: a path, file:///path or s3://bucket/prefix?endpoint=http://host:port&region=..."}

var flagIdentity = &cli.StringFlag{Name: "identity", Usage: "age identity file to decrypt encrypted backups"}

// retentionFlags are prune's (and the scheduler's) retention rules.
func retentionFlags() []cli.Flag {
	return []cli.Flag{
		&cli.IntFlag{Name: "keep-last", Usage: "keep the newest N backups"},
		&cli.IntFlag{Name: "keep-hourly", Usage: "keep the newest backup of each of the last N hours that have one"},
		&cli.IntFlag{Name: "keep-daily", Usage: "… of the last N days"},
		&cli.IntFlag{Name: "keep-weekly", Usage: "… of the last N ISO weeks"},
		&cli.IntFlag{Name: "keep-monthly", Usage: "… of the last N months"},
		&cli.DurationFlag{Name: "keep-within", Usage: "keep every backup taken within this duration of the newest"},
	}
}

func retention(c *cli.Context) backup.Retention {
	return backup.Retention{
		KeepLast: c.Int("keep-last"), KeepHourly: c.Int("keep-hourly"), KeepDaily: c.Int("keep-daily"),
		KeepWeekly: c.Int("keep-weekly"), KeepMonthly: c.Int("keep-monthly"), KeepWithin: c.Duration("keep-within"),
	}
}

func openRepo(c *cli.Context) (*backup.Repository, error) {
	return backup.Open(c.Context, c.String("repo"))
}

// openRepoToRead opens the repository and reads the --identity file, for
// commands that read backups' contents.
func openRepoToRead(c *cli.Context) (*backup.Repository, []age.Identity, error) {
	ids, err := identities(c)
	if err != nil {
		return nil, nil, err
	}
	r, err := openRepo(c)
	return r, ids, err
}

// maxKeyFile bounds an identity or recipients file: real ones hold a few
// lines.
const maxKeyFile = 1 << 20

// identities reads the --identity file, if given. Like ssh with its keys,
// a file others can read is refused.
func identities(c *cli.Context) ([]age.Identity, error) {
	p := c.String("identity")
	if p == "" {
		return nil, nil
	}
	fi, err := os.Stat(p)
	if err != nil {
		return nil, err
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, usageError{fmt.Errorf("--identity %s: readable by others (mode %04o); a secret key must be private: chmod 600 %s", p, fi.Mode().Perm(), p)}
	}
	b, err := fsutil.ReadSmall(p, maxKeyFile)
	if err != nil {
		return nil, usageError{fmt.Errorf("--identity: %w", err)}
	}
	ids, err := age.ParseIdentities(bytes.NewReader(b))
	if err != nil {
		return nil, usageError{fmt.Errorf("--identity %s: %w", p, err)}
	}
	return ids, nil
}

// recipients parses --encrypt-to values: age recipients, or files of them.
func recipients(values []string) ([]age.Recipient, error) {
	var out []age.Recipient
	for _, v := range values {
		text := v
		if _, err := os.Stat(v); err == nil {
			b, err := fsutil.ReadSmall(v, maxKeyFile)
			if err != nil {
				return nil, usageError{fmt.Errorf("--encrypt-to: %w", err)}
			}
			text = string(b)
		}
		rs, err := age.ParseRecipients(strings.NewReader(text))
		if err != nil {
			return nil, usageError{fmt.Errorf("--encrypt-to %s: %w", v, err)}
		}
		out = append(out, rs...)
	}
	return out, nil
}

func manifestsRecord(ms []backup.Manifest) record {
	rec := record{json: ms, header: []string{"id", "time", "revision", "cluster id", "member", "etcd version", "size", "stored size", "sha256", "verified"}}
	for _, m := range ms {
		rec.rows = append(rec.rows, []string{m.ID, m.Time.Format(time.RFC3339), fmt.Sprint(m.Revision), m.ClusterID, m.MemberName,
			m.EtcdVersion, humanBytes(m.Size), humanBytes(m.StoredSize), m.SHA256, fmt.Sprint(m.Verified)})
		rec.fields = append(rec.fields, [2]string{"Backup", fmt.Sprintf("%s revision %d verified %v", m.ID, m.Revision, m.Verified)})
	}
	return rec
}

func backupCommand() *cli.Command {
	return &cli.Command{
		Name:  "backup",
		Usage: "snapshots in a repository (a directory or an S3 bucket): create, list, check, prune, delete, copy",
		Subcommands: []*cli.Command{
			online(&cli.Command{
				Name:  "create",
				Usage: "take a snapshot of the cluster into the repository (zstd; age encryption with --encrypt-to)",
				Flags: []cli.Flag{flagRepo,
					&cli.StringFlag{Name: "compression", Value: "zstd", Usage: "zstd or none"},
					&cli.StringSliceFlag{Name: "encrypt-to", Usage: "age recipient (age1...) or a file of them; repeatable"},
					&cli.BoolFlag{Name: "verify", Value: true, Usage: "re-read the stored object after the upload"},
					&cli.StringFlag{Name: "tmp-dir", Hidden: true, Usage: "no longer used: the snapshot streams into the repository with nothing on disk (accepted for old scripts)"},
					&cli.StringSliceFlag{Name: "attach", Usage: "a file a restore also needs (encryption config, PKI, token), stored with the backup encrypted to --encrypt-to; repeatable"},
					&cli.BoolFlag{Name: "allow-plaintext-attachments", Usage: "store --attach files without --encrypt-to (they usually hold secrets)"},
					flagRateLimit, flagMemberHashKV,
				},
				Action: withCluster(runBackupCreate),
			}),
			leaf(&cli.Command{
				Name: "list", Usage: "the repository's backups, oldest first", Flags: []cli.Flag{flagRepo},
				Action: withRepo(runBackupList),
			}),
			leaf(&cli.Command{
				Name: "check", Usage: "re-read backups (all, or ID) and verify them against their manifests; without ID the revision log's segments too", ArgsUsage: "[ID]",
				Flags:  []cli.Flag{flagRepo, flagIdentity},
				Action: withRepo(runBackupCheck),
			}),
			leaf(&cli.Command{
				Name: "prune", Usage: "delete the backups the retention rules do not keep, and leftovers of interrupted uploads",
				Flags: append([]cli.Flag{flagRepo,
					&cli.BoolFlag{Name: "dry-run", Usage: "print what is kept and why, delete nothing"},
					&cli.DurationFlag{Name: "grace", Value: time.Hour, Usage: "leave traces of uploads younger than this (they may still be running)"},
				}, retentionFlags()...),
				Action: withRepo(runBackupPrune),
			}),
			leaf(&cli.Command{
				Name: "delete", Usage: "delete one backup", ArgsUsage: "ID", Flags: []cli.Flag{flagRepo},
				Action: withRepo(runBackupDelete),
			}),
			leaf(&cli.Command{
				Name:      "attachments",
				Usage:     "write a backup's attachments (files stored with --attach) into a directory, with their modes",
				ArgsUsage: "[ID|latest]",
				Flags: []cli.Flag{flagRepo, flagIdentity,
					&cli.StringFlag{Name: "output-dir", Required: true, Usage: "where the files are written (made 0700 if missing; existing files are not overwritten)"},
				},
				Action: withRepo(runBackupAttachments),
			}),
			leaf(&cli.Command{
				Name:      "drill",
				Usage:     "prove a backup restores: restore it into a scratch directory, boot etcd on it, compare with the manifest",
				ArgsUsage: "[ID|latest]",
				Description: "Checks that the member serves, and its HashKV at the backup's revision, key count, lease count\n" +
					"and membership against what was recorded when the backup was taken. Reports the time to a serving\n" +
					"member (the recovery time to expect). Exit 6 when a check fails; the scratch data is removed.",
				Flags: []cli.Flag{flagRepo, flagIdentity,
					&cli.StringFlag{Name: "scratch-dir", Usage: "where the scratch data dir is made (default: the system's temporary directory)"},
					&cli.StringFlag{Name: "etcd-binary", Usage: "boot this etcd executable (the release the cluster runs) instead of the embedded etcd"},
				},
				Action: withRepo(runBackupDrill),
			}),
			backupLogCommand(),
			backupConsolidateCommand(),
			leaf(&cli.Command{
				Name: "copy", Usage: "copy the backups and revision log segments another repository lacks into it (a second site)",
				Flags:  []cli.Flag{flagRepo, &cli.StringFlag{Name: "to", Required: true, Usage: "the other repository's URL"}},
				Action: withRepo(runBackupCopy),
			}),
		},
	}
}

// withRepo opens the --repo repository before fn.
func withRepo(fn func(c *cli.Context, r *backup.Repository) error) cli.ActionFunc {
	return func(c *cli.Context) error {
		r, err := openRepo(c)
		if err != nil {
			return err
		}
		return fn(c, r)
	}
}

func runBackupCreate(c *cli.Context, cl *cluster.Cluster) error {
	rs, err := recipients(c.StringSlice("encrypt-to"))
	if err != nil {
		return err
	}
	r, err := openRepo(c)
	if err != nil {
		return err
	}
	limit, err := rateLimit(c)
	if err != nil {
		return err
	}
	defer softMemoryLimitOf(streamMemoryLimit)()
	bar := newProgress(c.App.ErrWriter, "snapshot")
	m, err := r.Create(c.Context, cl, backup.CreateOptions{RateLimit: limit, SkipMemberHash: !c.Bool("member-hashkv"),
		Compression: c.String("compression"), Recipients: rs, Verify: c.Bool("verify"),
		Progress: bar.Report, Attachments: c.StringSlice("attach"), AllowPlaintextAttachments: c.Bool("allow-plaintext-attachments"),
	})
	bar.Done()
	if err != nil {
		return err
	}
	return output(c, manifestsRecord([]backup.Manifest{m}))
}

func runBackupList(c *cli.Context, r *backup.Repository) error {
	ms, err := r.List(c.Context)
	if err != nil {
		return err
	}
	segs, err := r.Segments(c.Context)
	if err != nil {
		return err
	}
	if len(segs) == 0 {
		return output(c, manifestsRecord(ms))
	}
	return output(c, windowsRecord(backup.Windows(ms, segs)))
}

// listed is a backup with the window a point-in-time restore reaches
// from it (backup list, when the repository holds a revision log).
type listed struct {
	backup.Manifest
	Window backup.Window `json:"restoreWindow"`
}

func windowsRecord(ws []backup.Window) record {
	var ms []backup.Manifest
	var js []listed
	for _, w := range ws {
		ms = append(ms, w.Backup)
		js = append(js, listed{w.Backup, w})
	}
	rec := manifestsRecord(ms)
	rec.json = js
	rec.header = append(rec.header, "restore window")
	for i, w := range ws {
		win := fmt.Sprintf("%d..%d until %s", w.From, w.To, w.ToTime.UTC().Format(time.RFC3339))
		rec.rows[i] = append(rec.rows[i], win)
		rec.fields[i][1] += ", restore window revisions " + win
	}
	return rec
}

// runBackupCheck prints every result, then fails if any backup did.
func runBackupCheck(c *cli.Context, r *backup.Repository) error {
	ids, err := identities(c)
	if err != nil {
		return err
	}
	res, cerr := r.Check(c.Context, c.Args().First(), ids)
	rec := record{json: res, header: []string{"id", "ok", "checked", "error"}}
	for _, x := range res {
		rec.rows = append(rec.rows, []string{x.ID, fmt.Sprint(x.OK), x.Content, x.Error})
		rec.fields = append(rec.fields, [2]string{x.ID, fmt.Sprintf("%v %s %s", x.OK, x.Content, x.Error)})
	}
	if err := output(c, rec); err != nil {
		return err
	}
	return cerr
}

func runBackupPrune(c *cli.Context, r *backup.Repository) error {
	res, err := r.Prune(c.Context, retention(c), c.Duration("grace"), c.Bool("dry-run"))
	if err != nil {
		return err
	}
	rec := record{json: res, header: []string{"id", "time", "revision", "keep", "why"}}
	for _, d := range res.Decisions {
		why := strings.Join(d.Reasons, ", ")
		rec.rows = append(rec.rows, []string{d.ID, d.Time.Format(time.RFC3339), fmt.Sprint(d.Revision), fmt.Sprint(d.Keep), why})
		rec.fields = append(rec.fields, [2]string{d.ID, fmt.Sprintf("keep=%v %s", d.Keep, why)})
	}
	for _, l := range res.Leftovers {
		rec.rows = append(rec.rows, []string{l, "", "", "false", "leftover of an interrupted upload"})
	}
	return output(c, rec)
}

func runBackupDelete(c *cli.Context, r *backup.Repository) error {
	if err := needArgs(c, 1, "one backup ID"); err != nil {
		return err
	}
	m, err := r.Delete(c.Context, c.Args().First())
	if err != nil {
		return err
	}
	return output(c, manifestsRecord([]backup.Manifest{m}))
}

func runBackupCopy(c *cli.Context, r *backup.Repository) error {
	dst, err := backup.Open(c.Context, c.String("to"))
	if err != nil {
		return err
	}
	ms, err := r.CopyTo(c.Context, dst)
	if err != nil {
		return err
	}
	segs, err := r.CopySegmentsTo(c.Context, dst)
	if err != nil {
		return fmt.Errorf("the backups are copied, but not all of the revision log: %w", err)
	}
	if len(segs) > 0 {
		fmt.Fprintf(c.App.ErrWriter, "note: %d revision log segment(s) copied\n", len(segs))
	}
	return output(c, manifestsRecord(ms))
}

func runBackupDrill(c *cli.Context, r *backup.Repository) error {
	if c.NArg() > 1 {
		return usageError{fmt.Errorf("backup drill takes at most one backup ID")}
	}
	id := c.Args().First()
	if id == "" {
		id = "latest"
	}
	ids, err := identities(c)
	if err != nil {
		return err
	}
	rep, err := drill.Run(c.Context, drill.Options{Repo: r, Backup: id, Identities: ids,
		ScratchDir: c.String("scratch-dir"), EtcdBinary: c.String("etcd-binary")})
	if rep != nil {
		if perr := output(c, drillRecord(rep)); perr != nil {
			return perr
		}
	}
	return err
}

func drillRecord(r *drill.Report) record {
	rec := record{json: r, header: []string{"CHECK", "OK", "DETAIL"}}
	for _, ch := range r.Checks {
		rec.rows = append(rec.rows, []string{ch.Name, fmt.Sprint(ch.OK), ch.Detail})
		rec.fields = append(rec.fields, [2]string{ch.Name, fmt.Sprintf("%v %s", ch.OK, ch.Detail)})
	}
	verdict := "passed"
	if !r.OK {
		verdict = "FAILED"
	}
	summary := fmt.Sprintf("backup %s (revision %d, %s): restored in %.1fs, serving after %.1fs, drill %s", r.Backup, r.Revision, humanBytes(r.Size), r.RestoreSeconds, r.ServingSeconds, verdict)
	rec.rows = append(rec.rows, []string{"drill", fmt.Sprint(r.OK), summary})
	rec.fields = append(rec.fields, [2]string{"Drill", summary})
	return rec
}

func runBackupAttachments(c *cli.Context, r *backup.Repository) error {
	if c.NArg() > 1 {
		return usageError{fmt.Errorf("backup attachments takes at most one backup ID")}
	}
	ids, err := identities(c)
	if err != nil {
		return err
	}
	m, err := r.Find(c.Context, c.Args().First())
	if err != nil {
		return err
	}
	return extractAttachments(c, r, m, ids, c.String("output-dir"))
}

// extractAttachments writes m's attachments into dir and lists them.
func extractAttachments(c *cli.Context, r *backup.Repository, m backup.Manifest, ids []age.Identity, dir string) error {
	paths, err := r.ExtractAttachments(c.Context, m, ids, dir)
	if err != nil {
		return err
	}
	if len(m.Attachments) == 0 {
		fmt.Fprintf(c.App.ErrWriter, "note: backup %s has no attachments\n", m.ID)
	}
	rec := record{json: m.Attachments, header: []string{"NAME", "MODE", "SIZE", "WRITTEN TO"}}
	for i, a := range m.Attachments {
		rec.rows = append(rec.rows, []string{a.Name, fmt.Sprintf("%04o", a.Mode), humanBytes(a.Size), paths[i]})
		rec.fields = append(rec.fields, [2]string{a.Name, paths[i]})
	}
	return output(c, rec)
}
