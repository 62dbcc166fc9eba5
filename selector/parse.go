package selector

import (
	"fmt"
	"slices"
	"strings"
)

// Grammar (recursive descent, one token of lookahead):
//
//	or      = and { "||" and }
//	and     = unary { "&&" unary }
//	unary   = "!" unary | primary
//	primary = "(" or ")" | "all" "(" ")" | "has" "(" key ")"
//	        | key ( "==" value | "!=" value | "in" set | "not" "in" set )
//	set     = "{" [ value { "," value } ] "}"
//
// "all", "has", "in" and "not" are only keywords where the grammar expects
// them, so a label may still be called "has" (has == "x").

type tokKind int

const (
	tEOF    tokKind = iota
	tIdent          // a label key or a keyword
	tString         // a quoted value; text is the value without quotes
	tEq             // ==
	tNe             // !=
	tNot            // !
	tAnd            // &&
	tOr             // ||
	tLParen
	tRParen
	tLBrace
	tRBrace
	tComma
)

type token struct {
	kind tokKind
	pos  int    // byte offset of the token's first byte
	text string // the source text, or the value of a tString
}

// describe names a token for "found ..." in errors.
func (t token) describe() string {
	switch t.kind {
	case tEOF:
		return "end of selector"
	case tString:
		return "quoted value " + quote(t.text)
	}
	return fmt.Sprintf("%q", t.text)
}

// parser turns the input into a tree. Errors are raised by panicking with
// a *ParseError, which parse recovers: it keeps the descent free of error
// plumbing, and nothing else panics with that type.
type parser struct {
	in  string
	off int   // where the lexer resumes
	tok token // the current token
}

func (p *parser) parse() (sel *Selector, err error) {
	if strings.TrimSpace(p.in) == "" {
		return nil, &ParseError{Input: p.in, Pos: 0, Reason: "empty selector; use all() to select everything"}
	}
	defer func() {
		if r := recover(); r != nil {
			pe, ok := r.(*ParseError)
			if !ok {
				panic(r)
			}
			sel, err = nil, pe
		}
	}()
	p.next()
	root := p.parseOr()
	if p.tok.kind != tEOF {
		if p.tok.kind == tRParen {
			p.fail(p.tok.pos, `unexpected ")" without a matching "("`)
		}
		p.fail(p.tok.pos, fmt.Sprintf(`unexpected %s, expected "&&", "||" or end of selector`, p.tok.describe()))
	}
	return &Selector{canon: root.String(), root: root}, nil
}

func (p *parser) fail(pos int, reason string) {
	panic(&ParseError{Input: p.in, Pos: pos, Reason: reason})
}

// expected fails at the current token, saying what should have been there.
func (p *parser) expected(what string) {
	if p.tok.kind == tEOF {
		p.fail(p.tok.pos, "unexpected end of selector, expected "+what)
	}
	p.fail(p.tok.pos, fmt.Sprintf("expected %s, found %s", what, p.tok.describe()))
}

// expect consumes a token of kind k or fails with what.
func (p *parser) expect(k tokKind, what string) token {
	if p.tok.kind != k {
		p.expected(what)
	}
	t := p.tok
	p.next()
	return t
}

func (p *parser) parseOr() node {
	var terms orNode
	for {
		x := p.parseAnd()
		if o, ok := x.(orNode); ok { // (a || b) || c is a || b || c
			terms = append(terms, o...)
		} else {
			terms = append(terms, x)
		}
		if p.tok.kind != tOr {
			break
		}
		p.next()
	}
	if len(terms) == 1 {
		return terms[0]
	}
	return terms
}

func (p *parser) parseAnd() node {
	var terms andNode
	for {
		x := p.parseUnary()
		if a, ok := x.(andNode); ok {
			terms = append(terms, a...)
		} else {
			terms = append(terms, x)
		}
		if p.tok.kind != tAnd {
			break
		}
		p.next()
	}
	if len(terms) == 1 {
		return terms[0]
	}
	return terms
}

func (p *parser) parseUnary() node {
	if p.tok.kind == tNot {
		p.next()
		return notNode{p.parseUnary()}
	}
	return p.parsePrimary()
}

const termStart = `a label key, "!", "(", has() or all()`

func (p *parser) parsePrimary() node {
	switch p.tok.kind {
	case tLParen:
		p.next()
		x := p.parseOr()
		p.expect(tRParen, `"&&", "||" or ")"`)
		return x
	case tIdent:
	case tRParen:
		p.fail(p.tok.pos, `unexpected ")", expected `+termStart)
	default:
		p.expected(termStart)
	}
	key := p.tok
	p.next()
	if p.tok.kind == tLParen && (key.text == "all" || key.text == "has") {
		p.next()
		if key.text == "all" {
			p.expect(tRParen, `")" after "all("`)
			return allNode{}
		}
		k := p.expect(tIdent, `a label key after "has("`)
		p.checkKey(k)
		p.expect(tRParen, `")" after "has(`+k.text+`"`)
		return hasNode{k.text}
	}
	p.checkKey(key)
	switch {
	case p.tok.kind == tEq || p.tok.kind == tNe:
		neg := p.tok.kind == tNe
		op := p.tok.text
		p.next()
		v := p.expect(tString, fmt.Sprintf("a quoted value after %q", op))
		return eqNode{key: key.text, val: v.text, neg: neg}
	case p.tok.kind == tIdent && p.tok.text == "in":
		p.next()
		return inNode{key: key.text, vals: p.parseSet("in")}
	case p.tok.kind == tIdent && p.tok.text == "not":
		p.next()
		if p.tok.kind != tIdent || p.tok.text != "in" {
			p.expected(`"in" after "not"`)
		}
		p.next()
		return inNode{key: key.text, vals: p.parseSet("not in"), neg: true}
	}
	p.expected(fmt.Sprintf(`"==", "!=", "in" or "not in" after label key %q`, key.text))
	return nil // not reached
}

// parseSet parses {"a", "b"} and returns its values sorted, without
// duplicates.
func (p *parser) parseSet(op string) []string {
	p.expect(tLBrace, fmt.Sprintf(`"{" after %q`, op))
	var vals []string
	if p.tok.kind == tRBrace {
		p.next()
		return vals
	}
	for {
		vals = append(vals, p.expect(tString, "a quoted value").text)
		if p.tok.kind == tRBrace {
			p.next()
			break
		}
		p.expect(tComma, `"}" or ","`)
	}
	slices.Sort(vals)
	return slices.Compact(vals)
}

// checkKey enforces the shape of a Kubernetes qualified name loosely: at
// most one "/", with something on both sides of it.
func (p *parser) checkKey(t token) {
	prefix, name, hasSlash := strings.Cut(t.text, "/")
	switch {
	case hasSlash && strings.Contains(name, "/"):
		p.fail(t.pos, fmt.Sprintf("invalid label key %q: more than one \"/\"", t.text))
	case hasSlash && (prefix == "" || name == ""):
		p.fail(t.pos, fmt.Sprintf("invalid label key %q: empty prefix or name around \"/\"", t.text))
	}
}

func isKeyByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '-' || c == '_' || c == '.' || c == '/'
}

// next lexes the token at p.off into p.tok.
func (p *parser) next() {
	in := p.in
	for p.off < len(in) && strings.IndexByte(" \t\r\n", in[p.off]) >= 0 {
		p.off++
	}
	start := p.off
	if start == len(in) {
		p.tok = token{kind: tEOF, pos: start}
		return
	}
	single := func(k tokKind) { p.off++; p.tok = token{k, start, in[start:p.off]} }
	pair := func(second byte, k tokKind) bool {
		if start+1 < len(in) && in[start+1] == second {
			p.off += 2
			p.tok = token{k, start, in[start:p.off]}
			return true
		}
		return false
	}
	switch c := in[start]; {
	case c == '(':
		single(tLParen)
	case c == ')':
		single(tRParen)
	case c == '{':
		single(tLBrace)
	case c == '}':
		single(tRBrace)
	case c == ',':
		single(tComma)
	case c == '!':
		if !pair('=', tNe) {
			single(tNot)
		}
	case c == '=':
		if !pair('=', tEq) {
			p.fail(start, `unexpected "=", did you mean "=="?`)
		}
	case c == '&':
		if !pair('&', tAnd) {
			p.fail(start, `unexpected "&", did you mean "&&"?`)
		}
	case c == '|':
		if !pair('|', tOr) {
			p.fail(start, `unexpected "|", did you mean "||"?`)
		}
	case c == '"' || c == '\'':
		end := strings.IndexByte(in[start+1:], c)
		if end < 0 {
			p.fail(start, "unterminated string")
		}
		p.off = start + 1 + end + 1
		p.tok = token{tString, start, in[start+1 : start+1+end]}
	case isKeyByte(c):
		for p.off < len(in) && isKeyByte(in[p.off]) {
			p.off++
		}
		p.tok = token{tIdent, start, in[start:p.off]}
	default:
		r := []rune(in[start:])[0]
		p.fail(start, fmt.Sprintf("unexpected character %q", r))
	}
}
