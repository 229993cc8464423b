package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/atkafka/atkafka/metrics"
	"github.com/atkafka/atkafka/sink/kafka"
	"github.com/atkafka/atkafka/source/backfill"
)

// backfillBrokers returns the brokers a backfill works against: a real cluster, since the work, its progress
// and the group live there and must outlive any one instance (an embedded broker would not).
func backfillBrokers(c *config) ([]string, error) {
	if len(c.Brokers) == 0 {
		return nil, errors.New("backfill needs --bootstrap-servers: its work and progress live in Kafka, shared by every instance")
	}
	return c.Brokers, nil
}

func (wiring) backfillPlan(ctx context.Context, c *config) error {
	log := newLogger(c)
	brokers, err := backfillBrokers(c)
	if err != nil {
		return err
	}
	if c.Backfill.Partitions < 1 || c.Backfill.PageSize < 1 {
		return errors.New("--backfill-partitions and --backfill-page-size must be at least 1")
	}
	// Only the service filters need documents at plan time; eventMetadata is the run's business.
	pc := *c
	pc.Firehose.Enrich = false
	pipeline, enricher, err := newPipeline(&pc, log, false, false)
	if err != nil {
		return err
	}
	if enricher != nil {
		defer enricher.Close()
	}
	// A full-network plan pages through tens of thousands of listings: its progress is worth watching.
	rt := &runtime{log: log}
	if err := rt.startServer(c); err != nil {
		return err
	}
	defer rt.closeServer()
	kc := kafkaClientConfig(c, brokers)
	kc.Logger = log
	if err := createWorkTopic(ctx, c, kc); err != nil {
		return err
	}
	kc.Topic = c.Backfill.Topic
	source := strings.TrimSuffix(c.Backfill.Source, "/")
	host := source
	if u, err := url.Parse(source); err == nil && u.Host != "" {
		host = u.Host
	}
	id := c.Kafka.TransactionalID
	if id == "" {
		id = "atkafka-backfill-plan-" + c.Backfill.Topic
	}
	p, err := kafka.NewTxn(ctx, kc, kafka.TxnConfig{TransactionalID: id, CursorTopic: c.Kafka.CursorTopic, CursorKey: "backfill-plan:" + host})
	if err != nil {
		return err
	}
	defer func() {
		if err := p.Close(context.WithoutCancel(ctx)); err != nil {
			log.Error("closing the plan's producer", "err", err)
		}
	}()
	_, err = backfill.Plan(ctx, backfill.PlanConfig{Host: source, Collection: listCollection(c.Firehose.WatchedCollections),
		PageSize: c.Backfill.PageSize, Sink: p, Cursor: p.Cursor(), Pipeline: pipeline, Logger: log,
		Observer: metrics.Backfill{}})
	return err
}

// listCollection is the collection plan lists by (listReposByCollection): the only watched collection, when it
// is an exact NSID. Patterns and several collections list every repository (a relay lists by one exact NSID, and
// listing several would plan a repository once per collection).
func listCollection(watched []string) string {
	if len(watched) != 1 || strings.Contains(watched[0], "*") {
		return ""
	}
	return watched[0]
}

// createWorkTopic creates the work topic compacted (one record per DID is all that matters) with
// --backfill-partitions, the most instances that can share the work.
func createWorkTopic(ctx context.Context, c *config, kc kafka.Config) error {
	opts, err := kc.ConnectOpts()
	if err != nil {
		return err
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	compact := "compact"
	resp, err := adm.CreateTopic(ctx, int32(c.Backfill.Partitions), int16(orDefault(c.Kafka.ReplicationFactor)),
		map[string]*string{"cleanup.policy": &compact}, c.Backfill.Topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		return fmt.Errorf("creating the work topic %s: %w", c.Backfill.Topic, err)
	}
	return nil
}

// orDefault maps 0 (the broker's default) to -1, as CreateTopics wants it.
func orDefault(n int) int {
	if n == 0 {
		return -1
	}
	return n
}

func (wiring) backfillRun(ctx context.Context, c *config) error {
	brokers, err := backfillBrokers(c)
	if err != nil {
		return err
	}
	log := newLogger(c)
	pipeline, enricher, err := newPipeline(c, log, true, false) // the enricher is needed anyway: it finds each PDS
	if err != nil {
		return err
	}
	defer enricher.Close()
	verifier, err := newVerifier(c, log, enricher)
	if err != nil {
		return err
	}
	rt := &runtime{log: log}
	if err := rt.startServer(c); err != nil {
		return err
	}
	defer rt.closeServer()
	kc := kafkaClientConfig(c, brokers)
	kc.Logger, kc.Topic = log, c.Topic
	kc.ExtraTopics = []string{c.DeadLetterTopic, c.Backfill.FailedTopic}
	// The producer is only opened to check the brokers and create the output topics as every command does.
	check, err := kafka.New(ctx, kc)
	if err != nil {
		return err
	}
	_ = check.Close(ctx)
	opts, err := kc.ProducerOpts()
	if err != nil {
		return err
	}
	id := c.Kafka.TransactionalID
	if id == "" {
		// Unique per instance: KIP-447 fences by group generation, not by id. A stable id (the pod name) lets a
		// restarted instance abort what its predecessor left open at once instead of after the timeout.
		host, _ := os.Hostname()
		var b [4]byte
		_, _ = rand.Read(b[:])
		id = "atkafka-backfill-" + host + "-" + hex.EncodeToString(b[:])
	}
	cfg := backfill.RunConfig{
		Opts: opts, WorkTopic: c.Backfill.Topic, Group: c.Backfill.Group,
		OutputTopic: c.Topic, FailedTopic: c.Backfill.FailedTopic, DeadLetterTopic: c.DeadLetterTopic,
		ExactlyOnce: c.Backfill.ExactlyOnce, TransactionalID: id, TransactionTimeout: c.Backfill.TransactionTimeout,
		TransactionTime: c.Backfill.TransactionTime,
		SessionTimeout:  c.Backfill.SessionTimeout, Concurrency: c.Backfill.Concurrency, HostConcurrency: c.Backfill.HostConcurrency,
		HostRate: c.Backfill.HostRate, RetryWindow: c.Backfill.RetryWindow, MemoryLimit: int64(c.Backfill.MemoryLimit),
		Pipeline: pipeline, Logger: log, Observer: metrics.Backfill{},
	}
	if v, ok := verifier.(backfill.Verifier); ok {
		cfg.Verifier = v
	}
	return backfill.Run(ctx, cfg)
}

func (wiring) backfillStatus(ctx context.Context, c *config) error {
	brokers, err := backfillBrokers(c)
	if err != nil {
		return err
	}
	kc := kafkaClientConfig(c, brokers)
	kc.Logger = newLogger(c)
	opts, err := kc.ConnectOpts()
	if err != nil {
		return err
	}
	p, err := backfill.Status(ctx, backfill.StatusConfig{Opts: opts, WorkTopic: c.Backfill.Topic, FailedTopic: c.Backfill.FailedTopic,
		OutputTopic: c.Topic, Group: c.Backfill.Group, Interval: c.Backfill.StatusInterval})
	if err != nil {
		return err
	}
	return p.Print(os.Stdout, c.Tail.JSON)
}
