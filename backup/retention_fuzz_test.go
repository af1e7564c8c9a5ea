package backup_test

import (
	"encoding/binary"
	"errors"
	"testing"
	"time"

	"github.com/etcdkit/etcdkit/backup"
	"github.com/etcdkit/etcdkit/save"
)

// TestRetentionRefusesNegatives: a negative count or duration is refused,
// never read as "keep nothing" (which deleted 9 of 10 backups).
func TestRetentionRefusesNegatives(t *testing.T) {
	for _, p := range []backup.Retention{{KeepLast: -1}, {KeepLast: 2, KeepDaily: -2}, {KeepMonthly: -1}, {KeepWithin: -time.Hour}} {
		if err := p.Validate(); !errors.Is(err, backup.ErrRetention) {
			t.Errorf("%+v: %v, want %v", p, err, backup.ErrRetention)
		}
	}
	if (backup.Retention{KeepLast: 2, KeepDaily: -2}).Empty() {
		t.Error("a retention with --keep-last 2 reads as empty")
	}
}

// FuzzDecide: for any backups and any valid rules, Decide returns one
// decision per backup, newest first; keeps the newest KeepLast and the
// newest verified; and gives every kept backup a reason and no removed one.
// Input: 9 bytes per backup (8 of time in seconds, 1 of revision and
// verified) and the rules' values.
func FuzzDecide(f *testing.F) {
	f.Add([]byte{1, 0, 0, 0, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 0, 0, 0, 2}, 1, 0, 1, 0, 0, int64(time.Hour))
	f.Fuzz(func(t *testing.T, b []byte, last, hourly, daily, weekly, monthly int, within int64) {
		p := backup.Retention{KeepLast: last, KeepHourly: hourly, KeepDaily: daily, KeepWeekly: weekly, KeepMonthly: monthly, KeepWithin: time.Duration(within)}
		if err := p.Validate(); err != nil {
			if !errors.Is(err, backup.ErrRetention) {
				t.Fatalf("unexpected error class: %v", err)
			}
			return
		}
		var ms []backup.Manifest
		for ; len(b) >= 9 && len(ms) < 200; b = b[9:] {
			sec := int64(binary.LittleEndian.Uint64(b) % (1 << 36)) // years 1970..4147
			ms = append(ms, backup.Manifest{ID: string(rune('a' + len(ms))), Manifest: save.Manifest{Time: time.Unix(sec, 0).UTC(), Revision: int64(b[8] >> 1)}, Verified: b[8]&1 == 1})
		}
		ds := backup.Decide(ms, p)
		if len(ds) != len(ms) {
			t.Fatalf("%d decisions for %d backups", len(ds), len(ms))
		}
		verifiedSeen := false
		for i, d := range ds {
			if i > 0 && ds[i-1].Before(d.Manifest) {
				t.Fatalf("decision %d is newer than %d", i, i-1)
			}
			if i < p.KeepLast && !d.Keep {
				t.Fatalf("backup %d of the newest %d not kept", i, p.KeepLast)
			}
			if d.Verified && !verifiedSeen && !d.Keep {
				t.Fatalf("the newest verified backup is not kept")
			}
			verifiedSeen = verifiedSeen || d.Verified
			if d.Keep != (len(d.Reasons) > 0) {
				t.Fatalf("keep %v with reasons %v", d.Keep, d.Reasons)
			}
		}
	})
}
