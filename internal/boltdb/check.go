package boltdb

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"
)

// ErrIntegrity reports a bolt file that fails bolt's consistency check.
var ErrIntegrity = errors.New("bolt integrity check failed")

// checkEnv names the file a re-executed etcdkit process checks.
const checkEnv = "ETCDKIT_INTERNAL_BOLT_CHECK"

// RunCheckChild must be called first thing in main (and TestMain): when the
// process was started by Check as its checker, it runs the check, prints
// one problem per line and exits; otherwise it returns at once.
func RunCheckChild() {
	path := os.Getenv(checkEnv)
	if path == "" {
		return
	}
	db, err := OpenReadOnly(path, 0)
	if err != nil {
		fmt.Println(err)
		os.Exit(3)
	}
	tx, err := db.Begin(false)
	if err != nil {
		fmt.Println(err)
		os.Exit(3)
	}
	n := 0
	done := make(chan struct{})
	go func() {
		defer close(done)
		for e := range tx.Check() {
			if n++; n <= 20 {
				fmt.Println(strings.ReplaceAll(e.Error(), "\n", " "))
			}
		}
	}()
	<-done
	if n > 0 {
		os.Exit(5)
	}
	os.Exit(0)
}

// Check runs bolt's consistency check (page types, reachability, freelist,
// key order) of the file at path in a re-executed copy of this program.
// bolt walks the tree in goroutines of its own, where a damaged page makes
// it panic beyond any recover; in a child process that panic is reported as
// ErrDamaged instead of killing the command. The child holds a shared lock,
// compatible with the caller's read-only handle.
func Check(path string) error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("bolt check: %w", err)
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), checkEnv+"="+path, "GOTRACEBACK=single")
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err = cmd.Run()
	if err == nil {
		return nil
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return fmt.Errorf("bolt check: %w", err)
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	switch ee.ExitCode() {
	case 5:
		const show = 3
		more := ""
		if len(lines) > show {
			more = fmt.Sprintf("; and %d more", len(lines)-show)
			lines = lines[:show]
		}
		return fmt.Errorf("%w: %s%s", ErrIntegrity, strings.Join(lines, "; "), more)
	case 3:
		return fmt.Errorf("bolt check: %s", lines[0])
	}
	// A panic or fault inside bolt: report its first line.
	msg := strings.SplitN(strings.TrimSpace(stderr.String()), "\n", 2)[0]
	return fmt.Errorf("%w: bolt crashed while checking after %s: %s", ErrDamaged, time.Since(start).Round(time.Millisecond), msg)
}
