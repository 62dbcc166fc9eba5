package selector

import (
	"errors"
	"testing"
)

func TestMatches(t *testing.T) {
	web := map[string]string{"role": "web", "tier": "front", "k8s.io/app": "shop"}
	db := map[string]string{"role": "db"}
	none := map[string]string{}
	tests := []struct {
		sel           string
		web, db, none bool
	}{
		{`all()`, true, true, true},
		{`role == "web"`, true, false, false},
		{`role == 'web'`, true, false, false},
		{`role != "web"`, false, true, true}, // absent key matches !=
		{`role in {"web", "api"}`, true, false, false},
		{`role not in {"web", "api"}`, false, true, true}, // absent key matches not in
		{`role in {}`, false, false, false},
		{`role not in {}`, true, true, true},
		{`has(tier)`, true, false, false},
		{`!has(tier)`, false, true, true},
		{`has(k8s.io/app)`, true, false, false},
		{`k8s.io/app == "shop"`, true, false, false},
		{`!role == "web"`, false, true, true},
		{`role == "web" && tier == "front"`, true, false, false},
		{`role == "db" || tier == "front"`, true, true, false},
		// && binds tighter than ||.
		{`role == "db" || role == "web" && has(nope)`, false, true, false},
		{`(role == "db" || role == "web") && has(nope)`, false, false, false},
		{`!(role == "db" || has(tier))`, false, false, true},
		{`!!has(role)`, true, true, false},
		// Keywords are only keywords where the grammar wants them.
		{`has == "x"`, false, false, false},
		{`has != "x" && all != "y"`, true, true, true},
	}
	for _, tt := range tests {
		s, err := Parse(tt.sel)
		if err != nil {
			t.Errorf("Parse(%q): %v", tt.sel, err)
			continue
		}
		for _, c := range []struct {
			name   string
			labels map[string]string
			want   bool
		}{{"web", web, tt.web}, {"db", db, tt.db}, {"none", none, tt.none}} {
			if got := s.Matches(c.labels); got != c.want {
				t.Errorf("%q matches %s: got %v, want %v", tt.sel, c.name, got, c.want)
			}
		}
		// The canonical form means the same thing.
		s2, err := Parse(s.String())
		if err != nil {
			t.Errorf("Parse(String() of %q = %q): %v", tt.sel, s.String(), err)
			continue
		}
		for _, l := range []map[string]string{web, db, none} {
			if s.Matches(l) != s2.Matches(l) {
				t.Errorf("%q and its canonical form %q disagree on %v", tt.sel, s, l)
			}
		}
	}
}

func TestCanonical(t *testing.T) {
	tests := []struct{ in, want string }{
		{`all()`, `all()`},
		{`  all ( )  `, `all()`},
		{`role=="web"`, `role == "web"`},
		{`role == 'web'`, `role == "web"`},
		{`role!='web'`, `role != "web"`},
		{`q == 'say "hi"'`, `q == 'say "hi"'`},
		{`role in {'b',"a", "b" ,"c"}`, `role in {"a", "b", "c"}`},
		{`role not in{"b","a"}`, `role not in {"a", "b"}`},
		{`role in {}`, `role in {}`},
		{`has( tier )`, `has(tier)`},
		{`! has(tier)`, `!has(tier)`},
		{`((role == "web"))`, `role == "web"`},
		{`a == "1" && (b == "2" && c == "3")`, `a == "1" && b == "2" && c == "3"`},
		{`(a == "1" || b == "2") || c == "3"`, `a == "1" || b == "2" || c == "3"`},
		{`(a == "1" && b == "2") || c == "3"`, `a == "1" && b == "2" || c == "3"`},
		{`a == "1" && (b == "2" || c == "3")`, `a == "1" && (b == "2" || c == "3")`},
		{`!(a == "1" && b == "2")`, `!(a == "1" && b == "2")`},
		{`!(has(a))`, `!has(a)`},
		{"a == \"1\"\n\t&&\tb == \"2\"", `a == "1" && b == "2"`},
	}
	for _, tt := range tests {
		s, err := Parse(tt.in)
		if err != nil {
			t.Errorf("Parse(%q): %v", tt.in, err)
			continue
		}
		if got := s.String(); got != tt.want {
			t.Errorf("Parse(%q).String() = %q, want %q", tt.in, got, tt.want)
		}
		// Canonical forms are fixed points.
		if again := MustParse(s.String()).String(); again != s.String() {
			t.Errorf("canonical form %q is not stable: reparsed to %q", s.String(), again)
		}
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		in     string
		pos    int
		reason string
	}{
		{``, 0, `empty selector; use all() to select everything`},
		{`   `, 0, `empty selector; use all() to select everything`},
		{`role == web`, 8, `expected a quoted value after "==", found "web"`},
		{`role != `, 8, `unexpected end of selector, expected a quoted value after "!="`},
		{`role == "web`, 8, `unterminated string`},
		{`role in {"a" "b"}`, 13, `expected "}" or ",", found quoted value "b"`},
		{`role in {"a",}`, 13, `expected a quoted value, found "}"`},
		{`role in "a"`, 8, `expected "{" after "in", found quoted value "a"`},
		{`role in {"a"`, 12, `unexpected end of selector, expected "}" or ","`},
		{`role not {"a"}`, 9, `expected "in" after "not", found "{"`},
		{`role == "a")`, 11, `unexpected ")" without a matching "("`},
		{`()`, 1, `unexpected ")", expected a label key, "!", "(", has() or all()`},
		{`(role == "a"`, 12, `unexpected end of selector, expected "&&", "||" or ")"`},
		{`role == "a" tier == "b"`, 12, `unexpected "tier", expected "&&", "||" or end of selector`},
		{`role = "a"`, 5, `unexpected "=", did you mean "=="?`},
		{`a == "1" & b == "2"`, 9, `unexpected "&", did you mean "&&"?`},
		{`a == "1" | b == "2"`, 9, `unexpected "|", did you mean "||"?`},
		{`a == "1" &&`, 11, `unexpected end of selector, expected a label key, "!", "(", has() or all()`},
		{`role`, 4, `unexpected end of selector, expected "==", "!=", "in" or "not in" after label key "role"`},
		{`has(role`, 8, `unexpected end of selector, expected ")" after "has(role"`},
		{`has("role")`, 4, `expected a label key after "has(", found quoted value "role"`},
		{`all(x)`, 4, `expected ")" after "all(", found "x"`},
		{`a/b/c == "x"`, 0, `invalid label key "a/b/c": more than one "/"`},
		{`/b == "x"`, 0, `invalid label key "/b": empty prefix or name around "/"`},
		{`role == "a" && tïer == "b"`, 16, `unexpected character 'ï'`},
		{`== "a"`, 0, `expected a label key, "!", "(", has() or all(), found "=="`},
	}
	for _, tt := range tests {
		_, err := Parse(tt.in)
		var pe *ParseError
		if !errors.As(err, &pe) {
			t.Errorf("Parse(%q): got %v, want a *ParseError", tt.in, err)
			continue
		}
		if pe.Pos != tt.pos || pe.Reason != tt.reason || pe.Input != tt.in {
			t.Errorf("Parse(%q):\n got pos %d %q\nwant pos %d %q", tt.in, pe.Pos, pe.Reason, tt.pos, tt.reason)
		}
	}
}

func TestErrorText(t *testing.T) {
	_, err := Parse(`role == web`)
	if got, want := err.Error(), `at column 9: expected a quoted value after "==", found "web"`; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

func TestAllAndMustParse(t *testing.T) {
	if !All().Matches(nil) || All().String() != "all()" {
		t.Errorf("All() = %q, does not match nil labels", All())
	}
	defer func() {
		if recover() == nil {
			t.Errorf("MustParse of a bad selector did not panic")
		}
	}()
	MustParse("role ==")
}
