package selector

import (
	"slices"
	"strings"
)

// The expression tree. Each node renders itself in canonical form, so a
// Selector's String is its root's String.

// allNode is all(): it matches everything.
type allNode struct{}

func (allNode) match(map[string]string) bool { return true }
func (allNode) String() string               { return "all()" }

// hasNode is has(key).
type hasNode struct{ key string }

func (n hasNode) match(l map[string]string) bool { _, ok := l[n.key]; return ok }
func (n hasNode) String() string                 { return "has(" + n.key + ")" }

// eqNode is key == val, or key != val when neg. As in Calico, != also
// matches when the key is absent: it is exactly the negation of ==.
type eqNode struct {
	key, val string
	neg      bool
}

func (n eqNode) match(l map[string]string) bool {
	v, ok := l[n.key]
	return (ok && v == n.val) != n.neg
}

func (n eqNode) String() string {
	op := " == "
	if n.neg {
		op = " != "
	}
	return n.key + op + quote(n.val)
}

// inNode is key in {vals}, or key not in {vals} when neg (which, like !=,
// also matches when the key is absent). vals is sorted and free of
// duplicates, which makes both the canonical form and the lookup simple.
type inNode struct {
	key  string
	vals []string
	neg  bool
}

func (n inNode) match(l map[string]string) bool {
	v, ok := l[n.key]
	if ok {
		_, ok = slices.BinarySearch(n.vals, v)
	}
	return ok != n.neg
}

func (n inNode) String() string {
	var b strings.Builder
	b.WriteString(n.key)
	if n.neg {
		b.WriteString(" not in {")
	} else {
		b.WriteString(" in {")
	}
	for i, v := range n.vals {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(quote(v))
	}
	b.WriteString("}")
	return b.String()
}

// notNode is !x.
type notNode struct{ x node }

func (n notNode) match(l map[string]string) bool { return !n.x.match(l) }

func (n notNode) String() string {
	switch n.x.(type) {
	case andNode, orNode:
		return "!(" + n.x.String() + ")"
	}
	return "!" + n.x.String()
}

// andNode is x && y && ...; nested ands are flattened into one.
type andNode []node

func (n andNode) match(l map[string]string) bool {
	for _, x := range n {
		if !x.match(l) {
			return false
		}
	}
	return true
}

func (n andNode) String() string {
	parts := make([]string, len(n))
	for i, x := range n {
		parts[i] = x.String()
		// Only || binds looser than &&.
		if _, ok := x.(orNode); ok {
			parts[i] = "(" + parts[i] + ")"
		}
	}
	return strings.Join(parts, " && ")
}

// orNode is x || y || ...; nested ors are flattened into one.
type orNode []node

func (n orNode) match(l map[string]string) bool {
	for _, x := range n {
		if x.match(l) {
			return true
		}
	}
	return false
}

func (n orNode) String() string {
	parts := make([]string, len(n))
	for i, x := range n {
		parts[i] = x.String()
	}
	return strings.Join(parts, " || ")
}

// quote renders a value in double quotes. The language has no escapes, so
// a value holding a double quote (possible only from single-quoted input)
// keeps single quotes.
func quote(v string) string {
	if strings.Contains(v, `"`) {
		return "'" + v + "'"
	}
	return `"` + v + `"`
}
