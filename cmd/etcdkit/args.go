package main

import (
	"fmt"
	"strings"

	"github.com/urfave/cli/v2"
)

// interspersed moves the flags that follow a command's positional arguments
// in front of them, so that `etcdkit snapshot status snap.db -w table` works
// the way it does with etcdutl and etcdctl (cobra); urfave/cli stops parsing
// flags at the first positional argument.
func interspersed(app *cli.App, args []string) ([]string, error) {
	if len(args) < 2 {
		return args, nil
	}
	out := []string{args[0]}
	cmds, flags := app.Commands, app.Flags
	var cur *cli.Command // the innermost command named so far
	path := "etcdkit"    // its name, for messages
	i := 1
	// Walk global flags and the command path.
	for i < len(args) {
		a := args[i]
		if strings.HasPrefix(a, "-") {
			n := flagArity(flags, a)
			out = append(out, args[i:min(i+n, len(args))]...)
			i += n
			continue
		}
		var next *cli.Command
		for _, c := range cmds {
			if c.HasName(a) {
				next = c
			}
		}
		if next == nil {
			// A command that only groups others takes no argument of
			// its own: this one names a command that does not exist.
			if len(cmds) > 0 && (cur == nil || cur.Action == nil) {
				return nil, usageError{fmt.Errorf("%s: unknown command %q; see '%s --help'", path, a, path)}
			}
			break
		}
		out = append(out, a)
		i++
		cur, path = next, path+" "+next.Name
		cmds, flags = next.Subcommands, append(append([]cli.Flag{}, flags...), next.Flags...)
		if len(cmds) == 0 {
			break
		}
	}
	var pos []string
	for i < len(args) {
		a := args[i]
		switch {
		case a == "--":
			pos = append(pos, args[i:]...)
			i = len(args)
		case strings.HasPrefix(a, "-") && a != "-":
			n := flagArity(flags, a)
			out = append(out, args[i:min(i+n, len(args))]...)
			i += n
		default:
			pos = append(pos, a)
			i++
		}
	}
	return append(out, pos...), nil
}

// flagArity is how many arguments the flag token a spans: 1 for a boolean
// flag or name=value, 2 when the value is the next argument.
func flagArity(flags []cli.Flag, a string) int {
	name := strings.TrimLeft(a, "-")
	if strings.Contains(name, "=") {
		return 1
	}
	for _, f := range flags {
		for _, n := range f.Names() {
			if n != name {
				continue
			}
			// Boolean flags take no value, also when altsrc wraps them
			// (scheduler, serve): ask the flag, not its type.
			if v, ok := f.(interface{ TakesValue() bool }); ok && !v.TakesValue() {
				return 1
			}
			return 2
		}
	}
	return 1 // --help, --version and unknown flags (reported by the parser)
}
