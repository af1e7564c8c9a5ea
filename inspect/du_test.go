package inspect

import "testing"

func TestPrefixOf(t *testing.T) {
	for _, tc := range []struct {
		key   string
		depth int
		want  string
	}{
		{"/registry/pods/ns/a", 2, "/registry/pods/"},
		{"/registry/pods/ns/a", 1, "/registry/"},
		{"/registry/pods/ns/a", 3, "/registry/pods/ns/"},
		{"/registry/pods/ns/a", 9, "/registry/pods/ns/"},
		{"/registry/pods/ns/a", 0, "/"},
		{"/app", 2, "/"},
		{"app/x/y", 1, "app/"},
		{"flat", 2, ""},
		{"", 2, ""},
		{"//x", 1, "//"},
	} {
		if got := string(prefixOf([]byte(tc.key), tc.depth)); got != tc.want {
			t.Errorf("prefixOf(%q, %d) = %q, want %q", tc.key, tc.depth, got, tc.want)
		}
	}
}

// TestKeyState: du's packed per-key state gives back what was packed,
// at the edges of its fields.
func TestKeyState(t *testing.T) {
	for _, c := range []struct {
		group int32
		size  int
		tomb  bool
	}{{0, 0, false}, {0, 0, true}, {1, 17, false}, {1<<31 - 1, 1<<32 - 1, true}, {1<<31 - 1, 1<<32 - 1, false}, {12345, 1 << 20, true}} {
		s := newKeyState(c.group, c.size, c.tomb)
		if s.group() != c.group || s.size() != int64(c.size) || s.tomb() != c.tomb {
			t.Errorf("packed %+v, got group %d size %d tomb %v", c, s.group(), s.size(), s.tomb())
		}
	}
}
