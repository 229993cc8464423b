package ozone

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/atkafka/atkafka/backoff"
)

const queryEventsNSID = "tools.ozone.moderation.queryEvents"

// page is one queryEvents answer. Events stay raw so that Kafka gets exactly the bytes Ozone sent.
type page struct {
	Cursor string            `json:"cursor"`
	Events []json.RawMessage `json:"events"`
}

// poll reads pages after start until ctx ends. It follows the response cursor while pages have events and waits
// PollInterval after an empty one. Failures are retried with backoff, except a definite rejection of the very
// first query: that is a configuration mistake (a wrong --labeler-did, an account that is not a moderator), which
// retrying cannot fix, so it ends Run with an error saying what to check.
func (s *Source) poll(ctx context.Context, start *position) error {
	r := s.newRetrier("ozone queryEvents")
	var next string
	if start != nil {
		next, s.lastRead = start.ozoneCursor(), *start
	}
	answered := false
	for ctx.Err() == nil {
		pg, err := s.fetch(ctx, next)
		if err != nil {
			if !answered && !isTransient(err) {
				return fmt.Errorf("ozone: %s through %s for labeler %s was refused: %w (check --labeler-did and that %s is a moderator of that labeler)",
					queryEventsNSID, s.cfg.PDSHost, s.cfg.LabelerDID, err, s.cfg.Identifier)
			}
			if ctx.Err() == nil {
				backoff.Sleep(ctx, r.failed(err))
			}
			continue
		}
		answered = true
		r.ok()
		if len(pg.Events) == 0 {
			s.cfg.Observer.Lag(0) // caught up
			backoff.Sleep(ctx, s.cfg.PollInterval)
			continue
		}
		last, err := s.producePage(ctx, pg)
		if err != nil {
			return nil // ctx ended
		}
		next = nextCursor(pg, last, next)
	}
	return nil
}

// nextCursor is the response cursor, or one made from the last event read should Ozone ever omit it, so that a
// page is never requested twice in a row.
func nextCursor(pg *page, last *position, prev string) string {
	switch {
	case pg.Cursor != "":
		return pg.Cursor
	case last != nil:
		return last.ozoneCursor()
	}
	return prev
}

// fetch asks for the page after cursor (empty: from the oldest event), renewing the session once if the PDS
// refused the token.
func (s *Source) fetch(ctx context.Context, cursor string) (*page, error) {
	q := s.query(cursor)
	for attempt := 0; ; attempt++ {
		tok, err := s.auth.token(ctx)
		if err != nil {
			return nil, err
		}
		headers := map[string]string{"Authorization": "Bearer " + tok, "atproto-proxy": s.proxy}
		began := time.Now()
		data, err := s.xrpc.call(ctx, http.MethodGet, queryEventsNSID, q, nil, headers)
		s.cfg.Observer.Polled(time.Since(began))
		if err != nil {
			if attempt == 0 && s.auth.rejected(err) {
				continue
			}
			return nil, err
		}
		var pg page
		if err := json.Unmarshal(data, &pg); err != nil {
			return nil, fmt.Errorf("%s: malformed answer: %w", queryEventsNSID, err)
		}
		return &pg, nil
	}
}

func (s *Source) query(cursor string) url.Values {
	q := url.Values{"sortDirection": {"asc"}, "limit": {strconv.Itoa(pageLimit)}}
	if cursor != "" {
		q.Set("cursor", cursor)
	}
	if s.settle > 0 {
		q.Set("createdBefore", s.now().Add(-s.settle).UTC().Format(isoMillis))
	}
	return q
}
