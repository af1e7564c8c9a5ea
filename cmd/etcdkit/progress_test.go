package main

import (
	"os"
	"path/filepath"
	"testing"
)

// TestLazyBarAsksOnce: a scan reports progress at every read; whether
// stderr is a terminal is asked at the first report only.
func TestLazyBarAsksOnce(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	asked := 0
	orig := isTerminal
	isTerminal = func(f *os.File) bool { asked++; return orig(f) }
	defer func() { isTerminal = orig }()
	bar := newProgress(f, "scanning")
	for i := int64(0); i < 1000; i++ {
		bar.Report(i, 1000)
	}
	bar.Done()
	if asked != 1 {
		t.Fatalf("asked whether stderr is a terminal %d times for 1000 reports, want 1", asked)
	}
	if fi, err := f.Stat(); err != nil || fi.Size() != 0 {
		t.Fatalf("a bar was drawn into a file: %v %v", fi, err)
	}
}
