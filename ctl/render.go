package ctl

import (
	"encoding/json"
	"fmt"
	"io"
	"reflect"
	"strings"
	"text/tabwriter"

	"gopkg.in/yaml.v3"
)

// render prints rows as a table (column per `table` struct tag), a JSON
// array of camelCase objects, or YAML with the same keys as the JSON.
func render[T any](w io.Writer, format string, rows []T) error {
	if rows == nil {
		rows = []T{}
	}
	switch format {
	case "json":
		b, err := json.MarshalIndent(rows, "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(w, "%s\n", b)
		return err
	case "yaml":
		return writeYAML(w, rows)
	}
	return writeTable(w, rows)
}

// writeYAML goes through JSON so YAML keys are exactly the JSON keys.
func writeYAML(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	var generic any
	if err := json.Unmarshal(b, &generic); err != nil {
		return err
	}
	enc := yaml.NewEncoder(w)
	enc.SetIndent(2)
	if err := enc.Encode(generic); err != nil {
		return err
	}
	return enc.Close()
}

func writeTable[T any](w io.Writer, rows []T) error {
	t := reflect.TypeFor[T]()
	var cols []int
	var header []string
	for i := 0; i < t.NumField(); i++ {
		if h := t.Field(i).Tag.Get("table"); h != "" {
			cols = append(cols, i)
			header = append(header, h)
		}
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		v := reflect.ValueOf(r)
		cells := make([]string, len(cols))
		for j, i := range cols {
			cells[j] = cell(v.Field(i))
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	return tw.Flush()
}

func cell(v reflect.Value) string {
	if s, ok := v.Interface().(fmt.Stringer); ok {
		if out := s.String(); out != "" {
			return out
		}
		return "-"
	}
	switch v.Kind() {
	case reflect.Slice:
		parts := make([]string, v.Len())
		for i := range parts {
			parts[i] = cell(v.Index(i))
		}
		if len(parts) == 0 {
			return "-"
		}
		return strings.Join(parts, ",")
	case reflect.String:
		if v.String() == "" {
			return "-"
		}
	case reflect.Uint32, reflect.Uint64, reflect.Int:
		if v.IsZero() {
			return "-"
		}
	}
	return fmt.Sprint(v.Interface())
}
