// Command atkafka carries AT Protocol events (relay firehose, Tap backfill, Ozone moderation events, labels) into
// Kafka.
//
// This package only parses configuration and wires the parts together; the behaviour lives in the packages
// under source/, transform/ and sink/.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/joho/godotenv"
	"github.com/urfave/cli/v3"

	"github.com/atkafka/atkafka/schema"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// commands runs each command with its parsed configuration. Tests replace it to check parsing alone.
type commands interface {
	relay(ctx context.Context, c *config) error
	tap(ctx context.Context, c *config) error
	ozone(ctx context.Context, c *config) error
	labels(ctx context.Context, c *config) error
	tail(ctx context.Context, c *config) error
	backfillPlan(ctx context.Context, c *config) error
	backfillRun(ctx context.Context, c *config) error
	backfillStatus(ctx context.Context, c *config) error
}

func newApp(run commands) *cli.Command {
	action := func(f func(context.Context, *config) error) cli.ActionFunc {
		return func(ctx context.Context, cmd *cli.Command) error {
			c, err := parseConfig(cmd)
			if err != nil {
				return err
			}
			return f(ctx, c)
		}
	}
	return &cli.Command{
		Name:    "atkafka",
		Usage:   "carry AT Protocol events into Kafka",
		Version: version,
		Flags:   globalFlags(),
		Commands: []*cli.Command{
			{
				Name:  "firehose",
				Usage: "produce repository events from a relay or from Tap",
				Flags: firehoseFlags(),
				Commands: []*cli.Command{
					{Name: "relay", Usage: "subscribe to a relay's com.atproto.sync.subscribeRepos", Flags: relayFlags(), Action: action(run.relay)},
					{Name: "tap", Usage: "consume indigo's Tap /channel (network backfill), acknowledging after Kafka", Flags: tapFlags(), Action: action(run.tap)},
				},
			},
			{
				Name:  "backfill",
				Usage: "load every repository of the network into Kafka, the work shared by any number of instances through a consumer group",
				Flags: append(firehoseFlags(), backfillFlags()...),
				Commands: []*cli.Command{
					{Name: "plan", Usage: "list every repository of a relay into the work topic, one compacted record per DID (resumable, idempotent)",
						Flags: backfillPlanFlags(), Action: action(run.backfillPlan)},
					{Name: "run", Usage: "load the repositories of the work partitions this instance is assigned (getRepo from each PDS), exactly once",
						Flags: backfillRunFlags(), Action: action(run.backfillRun)},
					{Name: "status", Usage: "print planned, done, failed, rates and ETA, read from the topics' and the group's offsets",
						Flags: backfillStatusFlags(), Action: action(run.backfillStatus)},
				},
			},
			{Name: "ozone-events", Usage: "poll an Ozone labeler's moderation events", Flags: ozoneFlags(), Action: action(run.ozone)},
			{Name: "labels", Usage: "subscribe to labelers' com.atproto.label.subscribeLabels", Flags: labelsFlags(), Action: action(run.labels)},
			{Name: "tail", Usage: "print events from a topic as they arrive", Flags: tailFlags(), Action: action(run.tail),
				CustomHelpTemplate: readingHelpTemplate()},
			{Name: "schema", Usage: "print the JSON Schema of a record shape; without a name, list the names", ArgsUsage: "[NAME]",
				Action: printSchema},
			{Name: "healthcheck", Usage: "exit 0 when the atkafka serving --metrics-listen-address is alive (for container health checks)",
				Action: action(func(ctx context.Context, c *config) error { return healthcheck(ctx, c) })},
		},
	}
}

// printSchema prints the named schema, or the names when none is given: the record contracts ship with the binary
// that writes them, so they match its version.
func printSchema(_ context.Context, cmd *cli.Command) error {
	w := cmd.Root().Writer
	name := cmd.Args().First()
	if name == "" {
		_, err := fmt.Fprintln(w, strings.Join(schema.Names(), "\n"))
		return err
	}
	b, ok := schema.Get(name)
	if !ok {
		return fmt.Errorf("no schema %q; the schemas are %s", name, strings.Join(schema.Names(), ", "))
	}
	_, err := w.Write(b)
	return err
}

func main() {
	// A .env file in the working directory is read as upstream did; variables already set win.
	if err := godotenv.Load(); err != nil && !os.IsNotExist(err) {
		fmt.Fprintln(os.Stderr, "atkafka: reading .env:", err)
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := newApp(wiring{}).Run(ctx, os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "atkafka:", err)
		os.Exit(1)
	}
}
