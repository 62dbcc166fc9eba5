package agent

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/calyxnet/calyx/agent/metadataproxy"
	"github.com/calyxnet/calyx/agent/subnetsvc"
)

// dashboardFile is the Grafana dashboard shipped with the agent.
const dashboardFile = "../deploy/grafana/calyx.json"

// exportedFamilies lists every metric family the agent can export, with
// its label names, from the descriptions of every collector Run registers
// (a description lists a family even before it has a sample).
func exportedFamilies(t *testing.T) map[string]map[string]bool {
	t.Helper()
	m := newMetrics()
	cols := []prometheus.Collector{m.reg, &dataplaneCollector{}, bgpCollector{}}
	cols = append(cols, metadataproxy.New(metadataproxy.Options{}).Collectors()...)
	ch := make(chan *prometheus.Desc)
	go func() {
		for _, c := range cols {
			c.Describe(ch)
		}
		subnetsvc.Describe(ch)
		close(ch)
	}()
	out := map[string]map[string]bool{}
	for d := range ch {
		name, labels, err := parseDesc(d)
		if err != nil {
			t.Fatal(err)
		}
		out[name] = labels
	}
	return out
}

// descRe reads what Desc.String shows (client_golang has no accessor):
// the name, and the constant and variable labels.
var descRe = regexp.MustCompile(`^Desc\{fqName: ("(?:[^"\\]|\\.)*"), help: "(?:[^"\\]|\\.)*", unit: "(?:[^"\\]|\\.)*", constLabels: \{(.*)\}, variableLabels: \{([^{}]*)\}\}$`)

// labelNameRe is a label name at the start of a constant label pair.
var labelNameRe = regexp.MustCompile(`(?:^|,)([a-zA-Z_][a-zA-Z0-9_]*)="`)

func parseDesc(d *prometheus.Desc) (string, map[string]bool, error) {
	if err := d.Err(); err != nil {
		return "", nil, err
	}
	m := descRe.FindStringSubmatch(d.String())
	if m == nil {
		// client_golang changed its format: fail, never pass unchecked.
		return "", nil, fmt.Errorf("cannot read %s", d)
	}
	name, err := strconv.Unquote(m[1])
	if err != nil {
		return "", nil, fmt.Errorf("%s: %w", d, err)
	}
	labels := map[string]bool{}
	for _, c := range labelNameRe.FindAllStringSubmatch(m[2], -1) {
		labels[c[1]] = true
	}
	for l := range strings.SplitSeq(m[3], ",") {
		if l = strings.TrimSuffix(strings.TrimPrefix(l, "c("), ")"); l != "" {
			labels[l] = true
		}
	}
	return name, labels, nil
}

// targetLabels are the labels Prometheus adds to every scraped series.
var targetLabels = map[string]bool{"instance": true, "job": true}

// promqlFuncs are the PromQL functions and aggregations the dashboard may
// call; another name before "(" is a mistake.
var promqlFuncs = map[string]bool{
	"sum": true, "min": true, "max": true, "avg": true, "count": true, "topk": true, "bottomk": true, "quantile": true,
	"rate": true, "irate": true, "increase": true, "delta": true, "deriv": true, "changes": true, "resets": true,
	"histogram_quantile": true, "scalar": true, "vector": true, "clamp_min": true, "clamp_max": true, "abs": true,
	"max_over_time": true, "min_over_time": true, "avg_over_time": true, "last_over_time": true, "time": true, "absent": true,
}

// promqlKeywords are the binary operators and modifiers spelt as words.
var promqlKeywords = map[string]bool{"and": true, "or": true, "unless": true, "bool": true, "offset": true,
	"group_left": true, "group_right": true}

// grouping keywords take a list of label names.
var groupingKeywords = map[string]bool{"by": true, "without": true, "on": true, "ignoring": true,
	"group_left": true, "group_right": true}

type token struct {
	kind byte // 'i' identifier, 's' string, 'n' number, or the punctuation itself
	text string
}

// lexPromQL splits a PromQL expression into identifiers, strings, numbers
// and punctuation; range and subquery brackets ([5m], [$__rate_interval])
// are skipped whole, and operators are left out.
func lexPromQL(expr string) ([]token, error) {
	var out []token
	for i := 0; i < len(expr); {
		c := expr[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n':
			i++
		case c == '[':
			j := strings.IndexByte(expr[i:], ']')
			if j < 0 {
				return nil, fmt.Errorf("unclosed [ at %d", i)
			}
			i += j + 1
		case c == '"' || c == '\'':
			j := i + 1
			for j < len(expr) && expr[j] != c {
				if expr[j] == '\\' {
					j++
				}
				j++
			}
			if j >= len(expr) {
				return nil, fmt.Errorf("unclosed string at %d", i)
			}
			s, err := strconv.Unquote(`"` + strings.ReplaceAll(expr[i+1:j], `"`, `\"`) + `"`)
			if err != nil {
				return nil, fmt.Errorf("string at %d: %w", i, err)
			}
			out = append(out, token{'s', s})
			i = j + 1
		case c >= '0' && c <= '9' || c == '.':
			j := i
			for j < len(expr) && (expr[j] >= '0' && expr[j] <= '9' || expr[j] == '.' || expr[j] == 'e' || expr[j] >= 'a' && expr[j] <= 'z') {
				j++
			}
			out = append(out, token{'n', expr[i:j]})
			i = j
		case c == '_' || c == ':' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z':
			j := i
			for j < len(expr) && (expr[j] == '_' || expr[j] == ':' || expr[j] >= 'a' && expr[j] <= 'z' ||
				expr[j] >= 'A' && expr[j] <= 'Z' || expr[j] >= '0' && expr[j] <= '9') {
				j++
			}
			out = append(out, token{'i', expr[i:j]})
			i = j
		case strings.IndexByte("(){},", c) >= 0:
			out = append(out, token{c, string(c)})
			i++
		case strings.IndexByte("+-*/%^=!<>~", c) >= 0:
			i++ // operators and matchers' =, !=, =~, !~: the structure is all that is checked
		default:
			return nil, fmt.Errorf("unexpected %q at %d", c, i)
		}
	}
	return out, nil
}

// selector is one metric selector of an expression: the name and the
// labels its matchers name.
type selector struct {
	name   string
	labels []string
}

// parsePromQL finds the selectors of expr and the label names its
// groupings (by, without, on, ignoring, group_left/right) name. Every
// selector must name its metric (no bare {__name__=...}), and every
// function must be a known one.
func parsePromQL(expr string) ([]selector, []string, error) {
	toks, err := lexPromQL(expr)
	if err != nil {
		return nil, nil, err
	}
	var sels []selector
	var grouped []string
	depth := 0
	for i := 0; i < len(toks); i++ {
		tk := toks[i]
		next := func(k byte) bool { return i+1 < len(toks) && toks[i+1].kind == k }
		switch tk.kind {
		case '(':
			depth++
		case ')':
			depth--
		case '{':
			return nil, nil, fmt.Errorf("a selector without a metric name")
		case 'i':
			switch {
			case groupingKeywords[tk.text] && next('('):
				i += 2
				for ; i < len(toks) && toks[i].kind != ')'; i++ {
					if toks[i].kind == 'i' {
						grouped = append(grouped, toks[i].text)
					} else if toks[i].kind != ',' {
						return nil, nil, fmt.Errorf("%s (...): unexpected %q", tk.text, toks[i].text)
					}
				}
			case promqlKeywords[tk.text]:
			case promqlFuncs[tk.text] && next('i') && (toks[i+1].text == "by" || toks[i+1].text == "without"):
				// An aggregation with its grouping first: sum by (l) (...).
			case next('('):
				if !promqlFuncs[tk.text] {
					return nil, nil, fmt.Errorf("unknown function %s", tk.text)
				}
			default:
				sel := selector{name: tk.text}
				if next('{') {
					i += 2
					for ; i < len(toks) && toks[i].kind != '}'; i++ {
						switch {
						case toks[i].kind == 'i' && i+1 < len(toks) && toks[i+1].kind == 's':
							sel.labels = append(sel.labels, toks[i].text)
							i++
						case toks[i].kind == ',':
						default:
							return nil, nil, fmt.Errorf("%s{...}: unexpected %q", sel.name, toks[i].text)
						}
					}
					if i == len(toks) {
						return nil, nil, fmt.Errorf("%s{...}: unclosed", sel.name)
					}
				}
				sels = append(sels, sel)
			}
		}
		if depth < 0 {
			return nil, nil, fmt.Errorf("unbalanced )")
		}
	}
	if depth != 0 {
		return nil, nil, fmt.Errorf("unbalanced (")
	}
	if len(sels) == 0 {
		return nil, nil, fmt.Errorf("no metric")
	}
	return sels, grouped, nil
}

// checkPromQL says what in expr the agent does not export: a metric (a
// histogram's _bucket, _sum and _count series are its family's), a label
// a matcher or a grouping names.
func checkPromQL(expr string, families map[string]map[string]bool) error {
	sels, grouped, err := parsePromQL(expr)
	if err != nil {
		return err
	}
	known := map[string]bool{}
	for l := range targetLabels {
		known[l] = true
	}
	for _, s := range sels {
		labels, ok := families[s.name]
		bucket := false
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if base, cut := strings.CutSuffix(s.name, suffix); !ok && cut {
				labels, ok = families[base]
				bucket = suffix == "_bucket"
			}
		}
		if !ok {
			return fmt.Errorf("metric %s is not exported by the agent", s.name)
		}
		for _, l := range s.labels {
			if !labels[l] && !targetLabels[l] && !(bucket && l == "le") {
				return fmt.Errorf("%s has no label %s", s.name, l)
			}
		}
		for l := range labels {
			known[l] = true
		}
		if bucket {
			known["le"] = true
		}
	}
	for _, l := range grouped {
		if !known[l] {
			return fmt.Errorf("grouping by %s, which none of its metrics has", l)
		}
	}
	return nil
}

// grafanaPanel is what the test reads of a panel.
type grafanaPanel struct {
	ID         int            `json:"id"`
	Type       string         `json:"type"`
	Title      string         `json:"title"`
	Datasource map[string]any `json:"datasource"`
	GridPos    *struct {
		H, W, X, Y int
	} `json:"gridPos"`
	Targets []struct {
		Expr       string         `json:"expr"`
		RefID      string         `json:"refId"`
		Datasource map[string]any `json:"datasource"`
	} `json:"targets"`
	Panels []grafanaPanel `json:"panels"` // a collapsed row's
}

// labelValuesRe is Grafana's label_values(METRIC{...}, LABEL) variable query.
var labelValuesRe = regexp.MustCompile(`^label_values\((.+),\s*([a-zA-Z_][a-zA-Z0-9_]*)\)$`)

// Every panel of the shipped dashboard has a query, and every query names
// only metrics and labels the agent exports: no panel stays empty because
// a metric was renamed.
func TestDashboardQueriesExported(t *testing.T) {
	families := exportedFamilies(t)
	raw, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		UID        string         `json:"uid"`
		Title      string         `json:"title"`
		Panels     []grafanaPanel `json:"panels"`
		Templating struct {
			List []struct {
				Name  string `json:"name"`
				Type  string `json:"type"`
				Query any    `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	if dash.UID == "" || dash.Title == "" {
		t.Errorf("dashboard without uid or title")
	}
	vars := map[string]bool{}
	for _, v := range dash.Templating.List {
		vars[v.Name] = true
		switch v.Type {
		case "datasource":
			if v.Name != "DS_PROMETHEUS" || v.Query != "prometheus" {
				t.Errorf("datasource variable %s (%v), want DS_PROMETHEUS of prometheus", v.Name, v.Query)
			}
		case "query":
			q, _ := v.Query.(map[string]any)
			s, _ := q["query"].(string)
			m := labelValuesRe.FindStringSubmatch(s)
			if m == nil {
				t.Errorf("variable %s: query %q is no label_values(METRIC, LABEL)", v.Name, s)
				continue
			}
			if err := checkPromQL(fmt.Sprintf("count by (%s) (%s)", m[2], m[1]), families); err != nil {
				t.Errorf("variable %s: %q: %v", v.Name, s, err)
			}
		}
	}
	for _, want := range []string{"DS_PROMETHEUS", "instance"} {
		if !vars[want] {
			t.Errorf("no variable %s", want)
		}
	}
	var all []grafanaPanel
	for _, p := range dash.Panels {
		all = append(all, p)
		all = append(all, p.Panels...)
	}
	ids := map[int]string{}
	queries := 0
	for _, p := range all {
		if prev, dup := ids[p.ID]; dup || p.ID == 0 {
			t.Errorf("panel %q: id %d (taken by %q)", p.Title, p.ID, prev)
		}
		ids[p.ID] = p.Title
		if p.GridPos == nil || p.GridPos.W == 0 || p.GridPos.H == 0 {
			t.Errorf("panel %q has no place (gridPos)", p.Title)
		}
		if p.Type == "row" {
			if len(p.Targets) != 0 {
				t.Errorf("row %q has queries", p.Title)
			}
			continue
		}
		if p.Title == "" {
			t.Errorf("panel %d has no title", p.ID)
		}
		if p.Datasource["uid"] != "${DS_PROMETHEUS}" {
			t.Errorf("panel %q: datasource %v, want ${DS_PROMETHEUS}", p.Title, p.Datasource)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		refs := map[string]bool{}
		for _, tg := range p.Targets {
			if tg.RefID == "" || refs[tg.RefID] {
				t.Errorf("panel %q: refId %q missing or repeated", p.Title, tg.RefID)
			}
			refs[tg.RefID] = true
			if strings.TrimSpace(tg.Expr) == "" {
				t.Errorf("panel %q query %s is empty", p.Title, tg.RefID)
				continue
			}
			if tg.Datasource != nil && tg.Datasource["uid"] != "${DS_PROMETHEUS}" {
				t.Errorf("panel %q query %s: datasource %v", p.Title, tg.RefID, tg.Datasource)
			}
			for _, ref := range regexp.MustCompile(`\$\{?([a-zA-Z_][a-zA-Z0-9_]*)`).FindAllStringSubmatch(tg.Expr, -1) {
				if !vars[ref[1]] && !strings.HasPrefix(ref[1], "__") {
					t.Errorf("panel %q query %s: no variable $%s", p.Title, tg.RefID, ref[1])
				}
			}
			queries++
			if err := checkPromQL(tg.Expr, families); err != nil {
				t.Errorf("panel %q query %s %q: %v", p.Title, tg.RefID, tg.Expr, err)
			}
		}
	}
	if queries == 0 {
		t.Fatal("the dashboard has no query")
	}
}

// The check fails a query on a metric the agent does not export, on a
// label it does not have, and on what it cannot read; it passes
// histograms' series and Grafana's variables.
func TestCheckPromQL(t *testing.T) {
	families := exportedFamilies(t)
	for _, name := range []string{"calyx_endpoint_packets_total", "calyx_drops_total", "calyx_nat_ports_in_use",
		"calyx_calc_duration_seconds", "calyx_datastore_watch_lag_seconds", "calyx_bgp_session_state", "calyx_build_info",
		"calyx_dhcp_messages_total", "calyx_metadata_requests_total", "calyx_bgp_peer_up", "calyx_dataplane_packets_total"} {
		if families[name] == nil {
			t.Errorf("%s is not among the agent's metrics", name)
		}
	}
	if l := families["calyx_build_info"]; !l["version"] || !l["goversion"] {
		t.Errorf("calyx_build_info labels %v", l)
	}
	good := []string{
		`histogram_quantile(0.99, sum by (instance, le) (rate(calyx_sync_duration_seconds_bucket{instance=~"$instance"}[$__rate_interval])))`,
		`sum(rate(calyx_endpoint_bytes_total{endpoint=~"$endpoint", direction="to-workload"}[5m])) by (endpoint) * 8`,
		`100 * calyx_nat_ports_busiest_destination / ignoring(family) group_left calyx_nat_port_range_ports`,
		`calyx_bgp_session_state{state='Established'} == 1`,
		`rate(calyx_sync_duration_seconds_count[5m]) > 0`,
	}
	for _, e := range good {
		if err := checkPromQL(e, families); err != nil {
			t.Errorf("%s: %v", e, err)
		}
	}
	bad := map[string]string{
		`rate(calyx_endpoint_packet_total[5m])`:                   "not exported",
		`sum by (reason) (rate(calyx_drop_total[5m]))`:            "not exported",
		`calyx_endpoint_packets_total{ifname="tap1"}`:             "no label ifname",
		`sum by (peer) (calyx_drops_total)`:                       "grouping by peer",
		`calyx_drops_total{reason="drop-policy"} + calyx_nothing`: "calyx_nothing",
		`rates(calyx_drops_total[5m])`:                            "unknown function",
		`{__name__="calyx_drops_total"}`:                          "without a metric name",
		`sum(calyx_drops_total`:                                   "unbalanced",
	}
	for e, want := range bad {
		err := checkPromQL(e, families)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want an error with %q", e, err, want)
		}
	}
	if families["go_goroutines"] == nil || families["process_resident_memory_bytes"] == nil {
		t.Errorf("the Go and process collectors' metrics are missing")
	}
}
