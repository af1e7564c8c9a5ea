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
