package main

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// Exit codes. They are part of the interface and listed in the README.
const (
	exitOK          = 0 // success
	exitError       = 1 // any other failure (I/O, unexpected)
	exitUsage       = 2 // bad flags or arguments
	exitInput       = 3 // bad input: missing file, not an etcd db, bad revision
	exitInUse       = 4 // the db is locked by another process (a running etcd)
	exitCorrupt     = 5 // integrity check failed: the data is damaged
	exitMismatch    = 6 // a hash or checksum does not match
	exitRefused     = 7 // refused: the target exists or the disk is too small
	exitUnavailable = 8 // the cluster or some member did not answer, or is unhealthy
)

var flagWriteOut = &cli.StringFlag{
	Name: "write-out", Aliases: []string{"w"}, Value: "simple",
	Usage: "output format: simple, json, table or fields",
}

var flagTimeout = &cli.DurationFlag{
	Name: "timeout", Value: 10 * time.Second,
	Usage: "how long to wait for the lock on a db file held by a running etcd; 0 waits forever",
}

func newApp(stdout, stderr io.Writer) *cli.App {
	app := &cli.App{
		Name:      "etcdkit",
		Usage:     "backup, restore and maintenance toolkit for etcd v3",
		Version:   version,
		Writer:    stdout,
		ErrWriter: stderr,
		Flags:     []cli.Flag{flagWriteOut, flagTimeout},
		Before: func(c *cli.Context) error {
			if _, err := newPrinter(c.String("write-out")); err != nil {
				return usageError{err}
			}
			return nil
		},
		Commands: []*cli.Command{
			snapshotCommand(),
			hashkvCommand(),
			defragCommand(),
			verifyCommand(),
			statusCommand(),
			healthCommand(),
			compactCommand(),
			alarmCommand(),
			recoverNoSpaceCommand(),
			backupCommand(),
			schedulerCommand(),
			serveCommand(),
			inspectCommand(),
			migrateCommand(),
			memberCommand(),
			recoverCommand(),
		},
		OnUsageError:    func(_ *cli.Context, err error, _ bool) error { return usageError{err} },
		ExitErrHandler:  func(*cli.Context, error) {},
		HideHelpCommand: true,
	}
	checkNumbersFirst(app.Commands)
	return app
}

// checkNumbersFirst makes every command report its flag parsing errors as
// usage errors (exit 2), and refuse a negative count, size, revision or
// duration before it acts: no flag of etcdkit means anything below zero,
// and a negative value read as "none" deleted backups (--keep-last -1).
// Flags, ETCDKIT_* variables and the YAML file all land in the same flags,
// so one check covers the three.
func checkNumbersFirst(cmds []*cli.Command) {
	for _, cmd := range cmds {
		checkNumbersFirst(cmd.Subcommands)
		if cmd.OnUsageError == nil {
			cmd.OnUsageError = quietUsageError
		}
		if cmd.Action == nil {
			continue
		}
		action := cmd.Action
		cmd.Action = func(c *cli.Context) error {
			if err := rejectNegative(c); err != nil {
				return err
			}
			beforeAction(c)
			return action(c)
		}
	}
}

// beforeAction runs before every command's action (a test sets it to
// panic, to prove the last line of defence).
var beforeAction = func(*cli.Context) {}

// rejectNegative refuses a negative value in any numeric flag of c and
// the commands above it.
func rejectNegative(c *cli.Context) error {
	for _, ctx := range c.Lineage() {
		var flags []cli.Flag
		switch {
		case ctx.Command != nil:
			flags = ctx.Command.Flags
		case ctx.App != nil:
			flags = ctx.App.Flags
		}
		for _, f := range flags {
			name := f.Names()[0]
			negative := false
			switch v := ctx.Value(name).(type) {
			case int:
				negative = v < 0
			case int64:
				negative = v < 0
			case time.Duration:
				negative = v < 0
			case float64:
				negative = v < 0
			}
			if negative {
				return usageError{fmt.Errorf("--%s %v: must not be negative", name, ctx.Value(name))}
			}
		}
	}
	return nil
}

// run executes the app and turns its error into one line on stderr and an
// exit code.
func run(args []string, stdout, stderr io.Writer) (code int) {
	// The last line of defence: a panic left anywhere in a command becomes
	// one line and exit 1, after the command's own cleanup ran while the
	// panic unwound (its temporary files are gone).
	defer func() {
		if r := recover(); r != nil {
			msg := strings.ReplaceAll(fmt.Sprint(r), "\n", "; ")
			fmt.Fprintf(stderr, "Error: internal error: %s (a bug in etcdkit: please report it with the command line)\n", msg)
			code = exitError
		}
	}()
	app := newApp(stdout, stderr)
	args, err := interspersed(app, args)
	if err == nil {
		err = app.Run(args)
	}
	if err == nil {
		return exitOK
	}
	msg := strings.ReplaceAll(strings.TrimSpace(err.Error()), "\n", "; ")
	fmt.Fprintf(stderr, "Error: %s\n", msg)
	return exitCode(err)
}

// usageError marks errors in how the command was called.
type usageError struct{ error }

func (e usageError) Unwrap() error { return e.error }

func exitCode(err error) int {
	var ue usageError
	// urfave/cli's missing required flag error has no exported type.
	if errors.As(err, &ue) || strings.HasPrefix(err.Error(), "Required flag") {
		return exitUsage
	}
	for _, m := range errorCodes {
		for _, target := range m.errs {
			if errors.Is(err, target) {
				return m.code
			}
		}
	}
	return exitError
}

// needArgs checks the number of positional arguments.
func needArgs(c *cli.Context, n int, what string) error {
	if c.NArg() != n {
		name := commandPath(c)
		return usageError{fmt.Errorf("%s: expected %s, got %d argument(s); see '%s --help'", name, what, c.NArg(), name)}
	}
	return nil
}

// commandPath is the full command line name of c, e.g. "etcdkit snapshot status".
func commandPath(c *cli.Context) string {
	var names []string
	for _, l := range c.Lineage() {
		if l.Command != nil && l.Command.Name != "" && l.Command.Name != c.App.Name {
			names = append([]string{l.Command.Name}, names...)
		}
	}
	return strings.Join(append([]string{"etcdkit"}, names...), " ")
}

// leaf adds the global flags to a command that does the work, so they may
// also be given after the command name, as etcdutl allows.
func leaf(cmd *cli.Command) *cli.Command {
	cmd.Flags = append(cmd.Flags,
		&cli.StringFlag{Name: flagWriteOut.Name, Aliases: flagWriteOut.Aliases, Value: flagWriteOut.Value, Usage: flagWriteOut.Usage},
		&cli.DurationFlag{Name: flagTimeout.Name, Value: flagTimeout.Value, Usage: flagTimeout.Usage},
	)
	cmd.OnUsageError = quietUsageError
	return cmd
}

// quietUsageError keeps urfave/cli from printing the whole help text on a
// usage error: run prints one line and the exit code says the rest.
func quietUsageError(_ *cli.Context, err error, _ bool) error { return usageError{err} }

// setOr returns the value of a flag from the innermost command where it was
// set, or its default: urfave/cli alone would let a leaf's default shadow a
// value given before the command name.
func setOr[T any](c *cli.Context, name string, get func(*cli.Context, string) T) T {
	for _, l := range c.Lineage() {
		if l.IsSet(name) {
			return get(l, name)
		}
	}
	return get(c, name)
}

func writeOut(c *cli.Context) string {
	return setOr(c, "write-out", (*cli.Context).String)
}

func lockTimeout(c *cli.Context) time.Duration {
	return setOr(c, "timeout", (*cli.Context).Duration)
}
