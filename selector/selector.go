// Package selector parses and evaluates Calico-style label selectors:
//
//	role == "web" && tier in {"a", "b"} || !has(quarantine) || all()
//
// Operators: ==, !=, in {...}, not in {...}, has(k), !has(k), !, &&, ||,
// parentheses and all(). && binds tighter than ||. Values are quoted with
// single or double quotes.
package selector

import "fmt"

// Selector is a parsed selector. The zero value is not valid; use Parse or
// All. A Selector is immutable and safe for concurrent use.
type Selector struct {
	canon string
	root  node
}

// node is one term of the expression tree.
type node interface {
	match(labels map[string]string) bool
	String() string
}

// ParseError says where in the input a selector stopped making sense.
type ParseError struct {
	Input  string
	Pos    int // byte offset into Input, 0-based
	Reason string
}

// Error renders "at column N: reason", columns counted from 1.
func (e *ParseError) Error() string {
	return fmt.Sprintf("at column %d: %s", e.Pos+1, e.Reason)
}

// Parse parses s. The error, if any, is a *ParseError.
func Parse(s string) (*Selector, error) {
	p := &parser{in: s}
	return p.parse()
}

// MustParse is Parse for selectors known to be valid; it panics on error.
func MustParse(s string) *Selector {
	sel, err := Parse(s)
	if err != nil {
		panic(fmt.Sprintf("selector %q: %v", s, err))
	}
	return sel
}

// All returns the selector that matches everything, all().
func All() *Selector { return MustParse("all()") }

// Matches reports whether a resource with these labels is selected.
func (s *Selector) Matches(labels map[string]string) bool { return s.root.match(labels) }

// String returns the canonical form: selectors that differ only in spacing,
// quoting, redundant parentheses or the order of an in-set's values have the
// same String.
func (s *Selector) String() string { return s.canon }
