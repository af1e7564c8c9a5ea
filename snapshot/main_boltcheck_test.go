package snapshot_test

import (
	"testing"

	"github.com/etcdkit/etcdkit/internal/testetcd"
)

// TestMain lets boltdb.Check re-execute the test binary as its checker.
func TestMain(m *testing.M) { testetcd.Main(m) }
