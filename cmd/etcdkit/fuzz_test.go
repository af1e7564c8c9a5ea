package main

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"

	"github.com/etcdkit/etcdkit/scheduler"
)

// FuzzSchedulerConfig: any --config YAML file ends in a scheduler the
// flags' rules accept, or in one line on stderr with a documented exit code
// (2 for a bad configuration, 3 for a file it names that is missing or not
// a small file); never a panic or a hang. The scheduler is only built, not
// run: nothing is contacted. Seed: the systemd example's configuration.
func FuzzSchedulerConfig(f *testing.F) {
	f.Add(systemdExampleConfig(f))
	f.Add("endpoints: 127.0.0.1:2379\nrepo: /tmp/r\nbackup-schedule: \"@every 30m\"\nkeep-last: 48\nretries: 0\n")
	f.Add("keep-last: -1\n")
	f.Add("encrypt-to: /dev/zero\n")
	f.Add("encrypt-to: [/dev/zero]\n")
	f.Add("defrag-schedule: \"@daily\"\ndefrag-rule: dbSize\n")
	f.Add("[1, 2")
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, yaml string) {
		path := filepath.Join(dir, "scheduler.yaml")
		if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		var stderr bytes.Buffer
		app := newApp(io.Discard, &stderr)
		for _, cmd := range app.Commands {
			if cmd.Name == "scheduler" {
				cmd.Action = func(c *cli.Context) error {
					cfg, err := schedulerConfig(c, clusterConfig(c))
					if err != nil {
						return err
					}
					_, err = scheduler.New(cfg)
					if err != nil {
						return usageError{err}
					}
					return nil
				}
			}
		}
		err := app.Run([]string{"etcdkit", "scheduler", "--metrics-addr=", "--config", path})
		if err == nil {
			return
		}
		if code := exitCode(err); code != exitUsage && code != exitInput {
			t.Fatalf("exit %d for a configuration file: %v", code, err)
		}
	})
}

// systemdExampleConfig is the YAML configuration shown in the systemd
// unit's comments: the commented block after its path.
func systemdExampleConfig(tb testing.TB) string {
	tb.Helper()
	b := []byte(deployFile(tb, "systemd/etcdkit-scheduler.service"))
	var yaml []string
	in := false
	for _, line := range strings.Split(string(b), "\n") {
		switch {
		case strings.HasPrefix(line, "# /etc/etcdkit/scheduler.yaml"):
			in = true
		case in && strings.HasPrefix(line, "#   "):
			yaml = append(yaml, strings.TrimPrefix(line, "#   "))
		case in:
			in = false
		}
	}
	if len(yaml) < 5 {
		tb.Fatalf("no YAML found in the systemd example")
	}
	return strings.Join(yaml, "\n") + "\n"
}
