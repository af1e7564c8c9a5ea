package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/dustin/go-humanize"
	"github.com/olekukonko/tablewriter"
	"github.com/olekukonko/tablewriter/tw"
)

// record is one result in the shapes every output format needs: a JSON
// value, a table (header and rows, also used by simple) and named fields.
type record struct {
	json   any
	header []string
	rows   [][]string
	fields [][2]string // name, value
}

type printer func(io.Writer, record) error

func newPrinter(format string) (printer, error) {
	switch format {
	case "simple":
		return printSimple, nil
	case "json":
		return printJSON, nil
	case "table":
		return printTable, nil
	case "fields":
		return printFields, nil
	}
	return nil, fmt.Errorf("unsupported output format %q (use simple, json, table or fields)", format)
}

func printSimple(w io.Writer, r record) error {
	for _, row := range r.rows {
		if _, err := fmt.Fprintln(w, strings.Join(row, ", ")); err != nil {
			return err
		}
	}
	return nil
}

func printJSON(w io.Writer, r record) error {
	b, err := json.Marshal(r.json)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(w, string(b))
	return err
}

// printTable renders like etcdutl (tablewriter, right-aligned rows).
func printTable(w io.Writer, r record) error {
	cfg := tablewriter.NewConfigBuilder().WithRowAlignment(tw.AlignRight)
	t := tablewriter.NewTable(w, tablewriter.WithConfig(cfg.Build()))
	t.Header(r.header)
	for _, row := range r.rows {
		if err := t.Append(row); err != nil {
			return err
		}
	}
	return t.Render()
}

func printFields(w io.Writer, r record) error {
	for _, f := range r.fields {
		if _, err := fmt.Fprintf(w, "%q : %s\n", f[0], f[1]); err != nil {
			return err
		}
	}
	return nil
}

func humanBytes(n int64) string { return humanize.Bytes(uint64(n)) }
