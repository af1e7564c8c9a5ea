package compact

import (
	"testing"
	"time"
)

func TestRevisionAt(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s := []Sample{{t0, 10}, {t0.Add(time.Hour), 20}, {t0.Add(2 * time.Hour), 30}}
	for _, tc := range []struct {
		at   time.Time
		want int64
	}{
		{t0.Add(-time.Second), 0},
		{t0, 10},
		{t0.Add(59 * time.Minute), 10},
		{t0.Add(time.Hour), 20},
		{t0.Add(5 * time.Hour), 30},
	} {
		if got := revisionAt(s, tc.at); got != tc.want {
			t.Errorf("at %v: %d, want %d", tc.at, got, tc.want)
		}
	}
}

func TestThin(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var s []Sample
	for i := range 5000 {
		s = thin(append(s, Sample{t0.Add(time.Duration(i) * time.Minute), int64(i)}))
	}
	if len(s) > clockKeep || s[0].Revision != 0 || s[len(s)-1].Revision != 4999 {
		t.Fatalf("%d samples from %d to %d", len(s), s[0].Revision, s[len(s)-1].Revision)
	}
	for i := 1; i < len(s); i++ {
		if !s[i].Time.After(s[i-1].Time) {
			t.Fatalf("not in order at %d", i)
		}
	}
	// The newest samples keep their one-minute resolution.
	if d := s[len(s)-1].Time.Sub(s[len(s)-2].Time); d != time.Minute {
		t.Errorf("newest step %v", d)
	}
}
