// Package schema holds the JSON Schemas (draft 2020-12) of every record shape atkafka writes: they are the
// contract consumers load into ClickHouse, Flink, Spark, BigQuery or Kafka Connect, and the tests validate every
// record they produce against them, so the two cannot drift apart. `atkafka schema` prints them.
package schema

import (
	"embed"
	"slices"
	"strings"
)

// BaseID is the base of every schema's $id; schemas refer to each other relative to it.
const BaseID = "https://github.com/atkafka/atkafka/schema/"

//go:embed *.json
var files embed.FS

// Names lists the schemas by name (file name without .json), sorted.
func Names() []string {
	entries, _ := files.ReadDir(".") // embedded: cannot fail
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		names = append(names, strings.TrimSuffix(e.Name(), ".json"))
	}
	slices.Sort(names)
	return names
}

// Get returns the schema named name, and false when there is none.
func Get(name string) ([]byte, bool) {
	b, err := files.ReadFile(name + ".json")
	return b, err == nil
}
