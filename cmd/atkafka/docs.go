package main

import (
	"fmt"
	"strings"

	"github.com/urfave/cli/v3"
)

// configTable renders every flag of the command tree as the Markdown table in README.md, so the documentation is
// generated from the flags themselves and a test fails when the two drift.
func configTable(root *cli.Command) string {
	var b strings.Builder
	b.WriteString("| flag | environment | default | commands | meaning |\n| --- | --- | --- | --- | --- |\n")
	var walk func(cmd *cli.Command, path string)
	walk = func(cmd *cli.Command, path string) {
		scope := strings.TrimPrefix(path, "atkafka ")
		if cmd == root {
			scope = "all"
		} else if len(cmd.Commands) > 0 {
			scope += " *"
		}
		for _, f := range cmd.Flags {
			doc, ok := f.(cli.DocGenerationFlag)
			if !ok || f.Names()[0] == "help" {
				continue
			}
			var envs []string
			for _, e := range doc.GetEnvVars() {
				envs = append(envs, "`"+e+"`")
			}
			def := ""
			if doc.IsDefaultVisible() {
				def = doc.GetValue()
			}
			if def != "" {
				def = "`" + def + "`"
			}
			names := "`--" + strings.Join(f.Names(), "`, `--") + "`"
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", names, strings.Join(envs, ", "), def, scope,
				strings.ReplaceAll(doc.GetUsage(), "|", `\|`))
		}
		for _, sub := range cmd.Commands {
			walk(sub, path+" "+sub.Name)
		}
	}
	walk(root, root.Name)
	return b.String()
}
