// Package flagfile fills a flag.FlagSet from a YAML file whose keys are the
// flag names, so that a daemon run by systemd keeps its settings in a
// config file (a Debian conffile) while a flag given on the command line
// still wins.
//
// The file is one YAML mapping of flag name to a single value, written as
// it would be on the command line ("1m", "true", "eth0"). A key with no
// value (null) leaves the flag at its default, so a shipped file can list
// every key without fixing defaults that are computed at run time (the
// hostname, say); an empty string ("") sets the flag to the empty string.
// An unknown key, a key given twice, or a value the flag does not accept is
// an error naming the key and the file.
package flagfile

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"

	"gopkg.in/yaml.v3"
)

// Parse parses args into fs, then sets from the file named by the flag
// configFlag every flag the file has a value for, then parses args again so
// that the command line overrides the file. A missing file is no error when
// configFlag was left at its default (a host without a config file runs on
// flags alone); a missing file that was asked for is. The file cannot name
// configFlag itself, nor the flags in commandLineOnly (one-shot actions,
// such as calyx-agent's --cleanup, which a service's every start would
// otherwise take).
func Parse(flags *flag.FlagSet, args []string, configFlag string, commandLineOnly ...string) error {
	cf := flags.Lookup(configFlag)
	if cf == nil {
		return fmt.Errorf("flagfile: no flag %q to name the config file", configFlag)
	}
	if err := flags.Parse(args); err != nil {
		return err
	}
	explicit := false
	flags.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == configFlag })
	path := cf.Value.String()
	if path == "" {
		return nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) && !explicit {
			return nil
		}
		return fmt.Errorf("config file: %w", err)
	}
	if err := apply(flags, path, data, append([]string{configFlag}, commandLineOnly...)); err != nil {
		return err
	}
	// The same arguments parsed the first time; parsing them again sets
	// the command line's values over the file's.
	return flags.Parse(args)
}

// Keys returns the keys of the YAML mapping in data, in file order, for
// checks that a shipped file lists every flag.
func Keys(data []byte) ([]string, error) {
	m, err := mapping(data)
	if err != nil || m == nil {
		return nil, err
	}
	var keys []string
	for i := 0; i < len(m.Content); i += 2 {
		keys = append(keys, m.Content[i].Value)
	}
	return keys, nil
}

// apply sets each flag the file gives a value for, stopping at the first
// key it cannot take (the caller does not start then). The flags in
// cmdline are never taken from a file.
func apply(flags *flag.FlagSet, path string, data []byte, cmdline []string) error {
	m, err := mapping(data)
	if err != nil {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	if m == nil {
		return nil // empty, or comments only
	}
	seen := map[string]bool{}
	for i := 0; i < len(m.Content); i += 2 {
		k, v := m.Content[i], m.Content[i+1]
		if k.Kind != yaml.ScalarNode || k.Tag == "!!null" {
			return fmt.Errorf("config file %s: line %d: a key must be a flag name", path, k.Line)
		}
		if flags.Lookup(k.Value) == nil {
			return fmt.Errorf("config file %s: line %d: unknown key %q (the keys are the flag names)", path, k.Line, k.Value)
		}
		if slices.Contains(cmdline, k.Value) {
			return fmt.Errorf("config file %s: line %d: key %q: --%s is given on the command line only", path, k.Line, k.Value, k.Value)
		}
		if seen[k.Value] {
			return fmt.Errorf("config file %s: line %d: key %q given twice", path, k.Line, k.Value)
		}
		seen[k.Value] = true
		if v.Kind == yaml.AliasNode {
			v = v.Alias
		}
		if v.Kind != yaml.ScalarNode {
			return fmt.Errorf("config file %s: line %d: key %q: want a single value, not a list or a mapping", path, v.Line, k.Value)
		}
		if v.Tag == "!!null" {
			continue // listed without a value: the flag's default
		}
		if err := flags.Set(k.Value, v.Value); err != nil {
			return fmt.Errorf("config file %s: line %d: key %q: invalid value %q: %w", path, v.Line, k.Value, v.Value, err)
		}
	}
	return nil
}

// mapping decodes data as one YAML document holding a mapping; nil for an
// empty document.
func mapping(data []byte) (*yaml.Node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil
		}
		return nil, err
	}
	var more yaml.Node
	if err := dec.Decode(&more); !errors.Is(err, io.EOF) {
		return nil, errors.New("want one YAML document, found more")
	}
	if len(doc.Content) == 0 {
		return nil, nil
	}
	m := doc.Content[0]
	if m.Kind == yaml.ScalarNode && m.Tag == "!!null" {
		return nil, nil // "---" alone
	}
	if m.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("line %d: want a mapping of flag names to values", m.Line)
	}
	return m, nil
}
