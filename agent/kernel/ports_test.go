package kernel

import "testing"

func TestPortsCovered(t *testing.T) {
	for _, c := range []struct {
		list   string
		lo, hi uint16
		want   bool
	}{
		{"", 20000, 29999, false},
		{"20000-29999", 20000, 29999, true},
		{"8080,19000-30000", 20000, 29999, true},
		{"20000-25000,25001-29999", 20000, 29999, false}, // one entry must hold it all
		{"20000-29998", 20000, 29999, false},
		{"22", 22, 22, true},
		{"junk", 20000, 29999, false},
	} {
		if got := portsCovered(c.list, c.lo, c.hi); got != c.want {
			t.Errorf("portsCovered(%q, %d, %d) = %v, want %v", c.list, c.lo, c.hi, got, c.want)
		}
	}
}
