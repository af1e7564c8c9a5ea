package main

import (
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
)

// TestEveryFlagEveryPosition: for every flag of every command (global
// flags included), the argument reordering keeps a value flag with its
// value and a boolean flag alone, whether the flag comes before or after a
// positional argument; a boolean flag never swallows the next argument.
func TestEveryFlagEveryPosition(t *testing.T) {
	app := newApp(io.Discard, io.Discard)
	var walk func(path []string, cmds []*cli.Command, inherited []cli.Flag)
	checked := 0
	walk = func(path []string, cmds []*cli.Command, inherited []cli.Flag) {
		for _, c := range cmds {
			p := append(slices.Clone(path), c.Name)
			flags := append(slices.Clone(inherited), c.Flags...)
			if len(c.Subcommands) > 0 {
				walk(p, c.Subcommands, flags)
			}
			if c.Action == nil {
				continue // a group: a positional argument here names a command
			}
			for _, f := range flags {
				name := f.Names()[0]
				tok := []string{"--" + name}
				if v, ok := f.(interface{ TakesValue() bool }); !ok || v.TakesValue() {
					tok = append(tok, "VALUE")
				}
				// The positional argument goes last, after every flag.
				want := append(append(append([]string{"etcdkit"}, p...), tok...), "POS")
				for _, args := range [][]string{
					append(append(append([]string{"etcdkit"}, p...), tok...), "POS"),
					append(append(append([]string{"etcdkit"}, p...), "POS"), tok...),
				} {
					got, err := interspersed(app, args)
					if err != nil {
						t.Fatalf("%q: %v", args, err)
					}
					if !slices.Equal(got, want) {
						t.Errorf("%s: %q reordered to %q, want %q", strings.Join(p, " "), args, got, want)
					}
					checked++
				}
			}
		}
	}
	walk(nil, app.Commands, app.Flags)
	if checked < 200 {
		t.Fatalf("only %d flag positions checked", checked)
	}
}

// TestBoolFlagsDoNotSwallow: the cases reported against scheduler and
// serve, whose flags altsrc wraps, through the whole command line.
func TestBoolFlagsDoNotSwallow(t *testing.T) {
	for _, args := range [][]string{
		{"scheduler", "--backup-at-start", "--repo", t.TempDir(), "--check", "--metrics-addr=", "--endpoints", "127.0.0.1:1", "--dial-timeout", "200ms", "--command-timeout", "300ms"},
		{"scheduler", "--insecure-skip-tls-verify", "--endpoints", "127.0.0.1:1", "--check", "--metrics-addr=", "--dial-timeout", "200ms", "--command-timeout", "300ms"},
	} {
		_, errOut, code := runCLI(args...)
		if code != exitUnavailable || strings.Contains(errOut, "expected no arguments") {
			t.Errorf("%q: exit %d, stderr %q; want %d (the cluster is unreachable), the arguments parsed", args, code, errOut, exitUnavailable)
		}
	}
}
