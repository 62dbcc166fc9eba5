package ctl

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/calyxnet/calyx/agent/monitor"
)

// monitorCmd is "monitor [--endpoint EP] [--reason R] [--proto P] [--for
// DURATION]": the drops on this host as they happen, from the agent's
// monitor.Path (--agent), one line each (-o json: the agent's JSON lines as
// they are), until interrupted or DURATION has passed.
func monitorCmd(ctx context.Context, o Options, args []string, stdio IO) error {
	var f monitor.Filter
	var forDur time.Duration
	for i := 0; i < len(args); i++ {
		name := args[i]
		var dst *string
		switch name {
		case "--endpoint":
			dst = &f.Endpoint
		case "--reason":
			dst = &f.Reason
		case "--proto":
			dst = &f.Proto
		case "--for":
		default:
			return usagef("monitor: unknown argument %q", name)
		}
		if i+1 >= len(args) {
			return usagef("monitor: %s needs a value", name)
		}
		i++
		if dst != nil {
			*dst = args[i]
			continue
		}
		d, err := time.ParseDuration(args[i])
		if err != nil || d <= 0 {
			return usagef("monitor: --for %q: want a positive duration (e.g. 30s)", args[i])
		}
		forDur = d
	}
	if o.Output == "yaml" {
		return usagef("monitor: -o yaml: monitor prints table lines or JSON lines (-o json)")
	}
	if _, err := monitor.ParseFilter(f.Query()); err != nil {
		return usagef("%v", err)
	}
	if forDur > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, forDur)
		defer cancel()
	}
	base := strings.TrimSuffix(o.Agent, "/")
	if !strings.Contains(base, "://") {
		base = "http://" + base // the agent's --metrics form, HOST:PORT
	}
	u := base + monitor.Path
	if q := f.Query(); len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("monitor: the agent at %s: %w", o.Agent, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, maxAgentBody))
		return fmt.Errorf("monitor: the agent answered %d: %s", resp.StatusCode, strings.TrimSpace(string(body)))
	}
	if o.Output == "table" {
		fmt.Fprintf(stdio.Out, "%-12s %-11s %-22s %-12s %-14s %-6s %-44s %s\n",
			"TIME", "KIND", "REASON", "ENDPOINT", "INTERFACE", "PROTO", "FLOW", "RULE")
	}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if o.Output == "json" {
			fmt.Fprintln(stdio.Out, sc.Text())
			continue
		}
		var e monitor.Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return fmt.Errorf("monitor: the agent sent %q: %w", sc.Text(), err)
		}
		fmt.Fprintln(stdio.Out, monitorLine(e))
	}
	if err := sc.Err(); err != nil && !errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
		return fmt.Errorf("monitor: %w", err)
	}
	return nil
}

// monitorLine is an event as one table line.
func monitorLine(e monitor.Event) string {
	flow, last := "", e.Rule
	if e.Src != "" {
		flow = e.Src + " -> " + e.Dst
	}
	if e.Allowed != nil {
		last += map[bool]string{true: " (allowed)", false: " (denied)"}[*e.Allowed]
	}
	return fmt.Sprintf("%-12s %-11s %-22s %-12s %-14s %-6s %-44s %s", e.Time.Format("15:04:05.000"), e.Kind,
		e.Reason, orDash(e.Endpoint), orDash(e.Interface), orDash(e.Proto), orDash(flow), orDash(last))
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
