package kafka

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/atkafka/atkafka/backoff"
)

// connect checks that some broker answers and accepts our credentials, learns the cluster's id, then makes sure
// the topics exist.
func (p *Producer) connect(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.ConnectTimeout)
	defer cancel()
	if err := p.ping(ctx); err != nil {
		return p.connectError(err)
	}
	meta, err := kadm.NewClient(p.cl).BrokerMetadata(ctx)
	if err != nil {
		return fmt.Errorf("reading the Kafka cluster's metadata: %w", err)
	}
	p.clusterID = meta.Cluster
	return p.ensureTopics(ctx)
}

// ping waits for a broker to answer; see Ping.
func (p *Producer) ping(ctx context.Context) error {
	return Ping(ctx, p.cl, p.cfg.Logger)
}

// Ping retries until a broker answers cl or ctx ends: kgo's Ping returns the first dial error, and a broker that
// is still starting (compose brings both up together) refuses connections for a while. Wrong credentials and
// failed TLS handshakes are final, so they fail at once. It logs one warning when the first attempt fails.
func Ping(ctx context.Context, cl *kgo.Client, log *slog.Logger) error {
	bo := backoff.New(100*time.Millisecond, 2*time.Second)
	for {
		err := cl.Ping(ctx)
		if err == nil || isAuthError(err) || isTLSError(err) {
			return err
		}
		if bo.Attempt() == 0 {
			log.Warn("no Kafka broker answers yet; retrying", "err", err)
		}
		if !backoff.Sleep(ctx, bo.Next()) {
			return err
		}
	}
}

// connectError says which of the usual start-up mistakes happened: wrong credentials, a refused TLS handshake
// or a wrong address.
func (p *Producer) connectError(err error) error {
	brokers := strings.Join(p.cfg.Brokers, ",")
	switch {
	case isAuthError(err):
		return fmt.Errorf("kafka SASL %s authentication as %q failed at %s: %w", p.cfg.SASL.Mechanism, p.cfg.SASL.Username, brokers, err)
	case isRemoteTLSAlert(err) && p.cfg.TLS.CertFile == "":
		return fmt.Errorf("kafka TLS handshake with %s failed: %w (the broker may require a client certificate, and none is configured)", brokers, err)
	case isTLSError(err):
		return fmt.Errorf("kafka TLS handshake with %s failed: %w", brokers, err)
	}
	return fmt.Errorf("no Kafka broker reachable at %s within %s: %w", brokers, p.cfg.ConnectTimeout, err)
}

// isTLSError reports a failed TLS handshake: a broker certificate we do not trust, or an alert from the broker
// (which refuses, say, a missing or untrusted client certificate). Retrying does not mend either.
func isTLSError(err error) bool {
	var badCert *tls.CertificateVerificationError
	return errors.As(err, &badCert) || isRemoteTLSAlert(err)
}

// isRemoteTLSAlert reports an alert the peer sent; crypto/tls returns those as a net.OpError "remote error".
func isRemoteTLSAlert(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "remote error"
}

func isAuthError(err error) bool {
	return errors.Is(err, kerr.SaslAuthenticationFailed) || errors.Is(err, kerr.UnsupportedSaslMechanism) ||
		errors.Is(err, kerr.IllegalSaslState)
}

// topics lists the output topic and the extra topics, without duplicates.
func (p *Producer) topics() []string {
	seen := map[string]bool{}
	var out []string
	for _, t := range append([]string{p.cfg.Topic}, p.cfg.ExtraTopics...) {
		if t != "" && !seen[t] {
			seen[t] = true
			out = append(out, t)
		}
	}
	return out
}

// ensureTopics creates the missing topics or, when creation is off, fails on a missing one: without it every record
// would be retried and then fail, long after start-up said all was well.
func (p *Producer) ensureTopics(ctx context.Context) error {
	adm := kadm.NewClient(p.cl)
	topics := p.topics()
	if !p.cfg.CreateTopic {
		return p.checkTopics(ctx, adm, topics)
	}
	resps, err := adm.CreateTopics(ctx, orBrokerDefault(p.cfg.Partitions), orBrokerDefault(p.cfg.ReplicationFactor), nil, topics...)
	if err != nil {
		return fmt.Errorf("creating Kafka topics %s: %w", strings.Join(topics, ","), err)
	}
	var errs []error
	var created []string
	for _, r := range resps.Sorted() {
		switch {
		case r.Err == nil:
			p.log.Info("created Kafka topic", "topic", r.Topic, "partitions", r.NumPartitions, "replication_factor", r.ReplicationFactor)
			created = append(created, r.Topic)
		case errors.Is(r.Err, kerr.TopicAlreadyExists):
		default:
			errs = append(errs, fmt.Errorf("creating Kafka topic %s: %w %s", r.Topic, r.Err, r.ErrMessage))
		}
	}
	if len(errs) == 0 && len(created) > 0 {
		p.waitForLeaders(ctx, adm, created)
	}
	return errors.Join(errs...)
}

// waitForLeaders waits until every partition of the new topics has a leader. A broker answers CreateTopics before
// its metadata lists the leaders, and a record sent in between waits for kgo's metadata retry backoff: a stall of
// up to seconds on the first records. Not finding them is not fatal (the records are retried), so it only warns.
func (p *Producer) waitForLeaders(ctx context.Context, adm *kadm.Client, topics []string) {
	bo := backoff.New(10*time.Millisecond, 200*time.Millisecond)
	for {
		details, err := adm.ListTopics(ctx, topics...)
		if err == nil && allLed(details, topics) {
			return
		}
		if !backoff.Sleep(ctx, bo.Next()) {
			p.log.Warn("new Kafka topics have no partition leaders yet; the first records may wait", "topics", topics, "err", cmp.Or(err, ctx.Err()))
			return
		}
	}
}

// allLed reports whether each topic is listed with all its partitions led.
func allLed(details kadm.TopicDetails, topics []string) bool {
	for _, t := range topics {
		d, ok := details[t]
		if !ok || d.Err != nil || len(d.Partitions) == 0 {
			return false
		}
		for _, part := range d.Partitions {
			if part.Err != nil || part.Leader < 0 {
				return false
			}
		}
	}
	return true
}

func (p *Producer) checkTopics(ctx context.Context, adm *kadm.Client, topics []string) error {
	details, err := adm.ListTopics(ctx, topics...)
	if err != nil {
		return fmt.Errorf("listing Kafka topics %s: %w", strings.Join(topics, ","), err)
	}
	var errs []error
	for _, t := range topics {
		if d, ok := details[t]; !ok || d.Err != nil {
			errs = append(errs, fmt.Errorf("kafka topic %s is not available and topic creation is off: %w", t, cmp.Or(d.Err, error(kerr.UnknownTopicOrPartition))))
		}
	}
	return errors.Join(errs...)
}

// orBrokerDefault maps our "zero means default" to Kafka's -1.
func orBrokerDefault[T int16 | int32](n T) T {
	if n == 0 {
		return -1
	}
	return n
}
