package lab

import (
	"encoding/json"
	"fmt"
	"strings"
)

// Endpoint is one row of "calyxctl endpoints dump -o json".
type Endpoint struct {
	Name      string   `json:"name"`
	Interface string   `json:"interface"`
	Ifindex   int      `json:"ifindex"`
	IPs       []string `json:"ips"`
	MAC       string   `json:"mac"`
}

// Route is one row of "calyxctl routes dump -o json".
type Route struct {
	CIDR      string `json:"cidr"`
	Type      string `json:"type"`
	Interface string `json:"interface"`
	Ifindex   int    `json:"ifindex"`
	NextHop   string `json:"nextHop"`
}

// Counter is one row of "calyxctl counters dump -o json".
type Counter struct {
	Interface string `json:"interface"`
	Ifindex   int    `json:"ifindex"`
	Reason    string `json:"reason"`
	Packets   uint64 `json:"packets"`
	Bytes     uint64 `json:"bytes"`
}

// Link is one row of "calyxctl links -o json".
type Link struct {
	Interface string `json:"interface"`
	Ifindex   int    `json:"ifindex"`
	Hook      string `json:"hook"`
	Mode      string `json:"mode"`
	ProgramID uint32 `json:"programID"`
}

// CtlArgs returns calyxctl's command line with the lab's datastore and the
// host's bpffs directory (the lab's bpffs root when host is "").
func (l *Lab) CtlArgs(host string, args ...string) ([]string, error) {
	bpffs := l.BPFFS
	if host != "" {
		h, err := l.Host(host)
		if err != nil {
			return nil, err
		}
		bpffs = h.BPFFS
	}
	return append([]string{l.CtlBinary(), "--datastore", l.DatastoreURL(), "--bpffs", bpffs}, args...), nil
}

// Calyxctl runs calyxctl in the root namespace (it reads pinned maps by
// path) against the lab's datastore and host's bpffs. Put global flags such
// as "-o json" before the verb.
func (l *Lab) Calyxctl(host string, args ...string) (stdout, stderr string, err error) {
	return l.CalyxctlInput(host, "", args...)
}

// CalyxctlInput is Calyxctl with stdin (for "apply -f -").
func (l *Lab) CalyxctlInput(host, stdin string, args ...string) (stdout, stderr string, err error) {
	full, err := l.CtlArgs(host, args...)
	if err != nil {
		return "", "", err
	}
	res, err := l.Run(Command{Args: full, Stdin: stdin})
	return res.Stdout, res.Stderr, err
}

// CalyxctlJSON runs calyxctl with "-o json" and decodes stdout into v.
func (l *Lab) CalyxctlJSON(host string, v any, args ...string) error {
	out, _, err := l.Calyxctl(host, append([]string{"-o", "json"}, args...)...)
	if err != nil {
		return err
	}
	if err := json.Unmarshal([]byte(out), v); err != nil {
		return fmt.Errorf("calyxctl %s: decode JSON: %w: %s", strings.Join(args, " "), err, tail(out, 10))
	}
	return nil
}

// Apply feeds yaml to "calyxctl apply -f -" and returns its combined
// output.
func (l *Lab) Apply(host, yaml string) (string, error) {
	out, errOut, err := l.CalyxctlInput(host, yaml, "apply", "-f", "-")
	return out + errOut, err
}

// Delete feeds yaml to "calyxctl delete -f -".
func (l *Lab) Delete(host, yaml string) (string, error) {
	out, errOut, err := l.CalyxctlInput(host, yaml, "delete", "-f", "-")
	return out + errOut, err
}

// Endpoints returns "calyxctl endpoints dump" for host.
func (l *Lab) Endpoints(host string) ([]Endpoint, error) {
	var v []Endpoint
	return v, l.CalyxctlJSON(host, &v, "endpoints", "dump")
}

// Routes returns "calyxctl routes dump" for host.
func (l *Lab) Routes(host string) ([]Route, error) {
	var v []Route
	return v, l.CalyxctlJSON(host, &v, "routes", "dump")
}

// Counters returns "calyxctl counters dump" for host.
func (l *Lab) Counters(host string) ([]Counter, error) {
	var v []Counter
	return v, l.CalyxctlJSON(host, &v, "counters", "dump")
}

// Links returns "calyxctl links" for host.
func (l *Lab) Links(host string) ([]Link, error) {
	var v []Link
	return v, l.CalyxctlJSON(host, &v, "links")
}

// CounterPackets sums the packets of rows for iface and reason.
func CounterPackets(rows []Counter, iface, reason string) uint64 {
	var n uint64
	for _, r := range rows {
		if r.Interface == iface && r.Reason == reason {
			n += r.Packets
		}
	}
	return n
}

// LinksFor returns the rows of links that are on iface.
func LinksFor(links []Link, iface string) []Link {
	var out []Link
	for _, k := range links {
		if k.Interface == iface {
			out = append(out, k)
		}
	}
	return out
}
