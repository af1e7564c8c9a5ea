package rollingdefrag

import (
	"errors"
	"testing"
)

func TestRule(t *testing.T) {
	vars := map[string]float64{"dbSize": 1000, "dbSizeInUse": 300, "dbSizeFree": 700, "dbQuota": 2000, "dbQuotaUsage": 0.5}
	for _, tc := range []struct {
		src  string
		want bool
		err  bool
	}{
		{"", true, false},
		{"dbSizeFree > 256*1024*1024 || dbQuotaUsage > 0.8", false, false},
		{"dbSizeFree > 600 || dbQuotaUsage > 0.8", true, false},
		{"dbSizeFree >= 700 && !(dbSize < 1000)", true, false},
		{"(dbSize - dbSizeInUse) / dbSize > 0.5", true, false},
		{"dbQuotaUsage == 0.5 && -dbSize < 0", true, false},
		{"dbSize / 0 > 1", false, false},
		{"dbSize", false, true},               // a number, not a decision
		{"dbSizee > 1", false, true},          // unknown name
		{"dbSize > 1 &&", false, true},        // syntax
		{"dbSize > \"1\"", false, true},       // a string
		{"f(dbSize) > 1", false, true},        // a call
		{"dbSize > 1 + (2 > 1)", false, true}, // number and bool mixed
	} {
		// Every bad rule is refused by ParseRule itself, so a configuration
		// holding one fails at start instead of at every run.
		r, err := ParseRule(tc.src)
		if (err != nil) != tc.err || err != nil && !errors.Is(err, ErrRule) {
			t.Errorf("ParseRule(%q): error %v, want error %v", tc.src, err, tc.err)
			continue
		}
		if err != nil {
			continue
		}
		got, err := r.Eval(vars)
		if err != nil {
			t.Errorf("%q: Eval: %v", tc.src, err)
		} else if got != tc.want {
			t.Errorf("%q = %v, want %v", tc.src, got, tc.want)
		}
	}
}

// FuzzParseRule: any text is a rule or ErrRule, never a panic; and a rule
// that parsed evaluates without error on any member's values (ParseRule
// refuses everything that could fail later).
func FuzzParseRule(f *testing.F) {
	for _, s := range []string{"", "dbSizeFree > 256*1024*1024 || dbQuotaUsage > 0.8", "dbSize", "!(dbSize < 1) && dbQuota / 0 == 0", "f(x)", "1e308*10 > dbSize"} {
		f.Add(s, 1.0, 0.5)
	}
	f.Fuzz(func(t *testing.T, src string, a, b float64) {
		r, err := ParseRule(src)
		if err != nil {
			if !errors.Is(err, ErrRule) {
				t.Fatalf("%q: unexpected error class: %v", src, err)
			}
			return
		}
		vars := map[string]float64{"dbSize": a, "dbSizeInUse": b, "dbSizeFree": a - b, "dbQuota": b, "dbQuotaUsage": a / b}
		if _, err := r.Eval(vars); err != nil {
			t.Fatalf("%q parsed but does not evaluate: %v", src, err)
		}
	})
}
