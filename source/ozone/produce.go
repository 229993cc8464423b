package ozone

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/atkafka/atkafka/backoff"
	"github.com/atkafka/atkafka/sink"
)

const sourceLabel = "ozone"

// event is what the source needs from a modEventView; raw is produced untouched.
type event struct {
	raw          json.RawMessage
	id           int64
	createdAtRaw string
	createdAt    time.Time // zero when createdAt is missing or unreadable
	typ          string    // $type of the view's event field, such as tools.ozone.moderation.defs#modEventTakedown
}

// errDecode is a modEventView that cannot be produced; kind is its decode_errors label.
type errDecode struct {
	kind string
	msg  string
}

func (e *errDecode) Error() string { return e.msg }

// decodeEvent reads the fields the source needs. It fails only when the event has no usable id: without one there
// is no key and no way to tell it from others. A missing or odd createdAt is tolerated (see producePage).
func decodeEvent(raw json.RawMessage) (event, error) {
	if b := bytes.TrimSpace(raw); len(b) == 0 || b[0] != '{' {
		return event{}, &errDecode{"not_object", "event is not a JSON object"}
	}
	var head struct {
		ID        json.RawMessage `json:"id"`
		CreatedAt string          `json:"createdAt"`
		Event     json.RawMessage `json:"event"`
	}
	if err := json.Unmarshal(raw, &head); err != nil {
		return event{}, &errDecode{"malformed", "event: " + err.Error()}
	}
	id, err := strconv.ParseInt(string(head.ID), 10, 64)
	if err != nil {
		return event{}, &errDecode{"missing_id", "event without an integer id"}
	}
	ev := event{raw: raw, id: id, createdAtRaw: head.CreatedAt, typ: eventType(head.Event)}
	if t, err := time.Parse(time.RFC3339Nano, head.CreatedAt); err == nil {
		ev.createdAt = t
	}
	return ev, nil
}

// eventType returns the $type of a modEventView's event union member, or "" when there is none.
func eventType(raw json.RawMessage) string {
	var v struct {
		Type string `json:"$type"`
	}
	_ = json.Unmarshal(raw, &v) // a missing or non-object event simply has no type
	return v.Type
}

// actionName is the handled_events label and the Osprey action name: "ozone:" and the short name after '#',
// bounded by Ozone's lexicon.
func actionName(typ string) string {
	if typ == "" {
		return "ozone:unknown"
	}
	if i := strings.LastIndexByte(typ, '#'); i >= 0 {
		typ = typ[i+1:]
	}
	return "ozone:" + typ
}

// producePage hands every event of pg to the sink in order and returns the position of the last one read. It
// fails only when ctx ends.
func (s *Source) producePage(ctx context.Context, pg *page) (*position, error) {
	var last *position
	for _, raw := range pg.Events {
		ev, err := decodeEvent(raw)
		if err != nil {
			if err := s.reject(ctx, err, raw); err != nil {
				return last, err
			}
			continue
		}
		pos := s.positionOf(ev)
		s.observeRead(ev)
		if err := s.send(ctx, s.record(ev), pos); err != nil {
			return last, err
		}
		last = &pos
	}
	return last, nil
}

// positionOf is the event's place in Ozone's order. An event whose createdAt cannot be read takes the position
// before it: the cursor then stops short of it, which at worst repeats it after a restart, never skips it.
func (s *Source) positionOf(ev event) position {
	if !ev.createdAt.IsZero() {
		s.lastRead = newPosition(ev.createdAt, ev.id)
		return s.lastRead
	}
	s.cfg.Observer.DecodeError("bad_created_at")
	s.log.Warn("ozone event with unreadable createdAt; producing it anyway", "id", ev.id, "created_at", ev.createdAtRaw)
	return s.lastRead
}

// reject counts and logs an event that cannot be produced, and writes it to the dead-letter topic when one is
// configured. Such events are rare enough (never, from a real Ozone) that one line each is not spam, and they
// must not pass unnoticed.
func (s *Source) reject(ctx context.Context, err error, raw json.RawMessage) error {
	kind := "malformed"
	var de *errDecode
	if errors.As(err, &de) {
		kind = de.kind
	}
	s.cfg.Observer.DecodeError(kind)
	excerpt := string(raw[:min(len(raw), 200)])
	if s.cfg.DeadLetterTopic == "" {
		s.log.Error("ozone event skipped", "err", err, "kind", kind, "event", excerpt)
		return nil
	}
	s.log.Error("ozone event dead-lettered", "err", err, "kind", kind, "event", excerpt)
	s.cfg.Observer.DeadLettered(kind)
	dl := &sink.DeadLetter{Source: sourceLabel, Reason: kind, Err: err, Raw: raw}
	return s.send(ctx, dl.Record(s.cfg.DeadLetterTopic), s.lastRead)
}

func (s *Source) observeRead(ev event) {
	s.cfg.Observer.Read(actionName(ev.typ), ev.id)
	if !ev.createdAt.IsZero() {
		s.cfg.Observer.Lag(s.now().Sub(ev.createdAt))
	}
}

func (s *Source) record(ev event) sink.Record {
	key := strconv.FormatInt(ev.id, 10)
	value := []byte(ev.raw)
	if f := s.cfg.Formatter; f != nil {
		value = f.AppendRaw(nil, actionName(ev.typ), ev.createdAtRaw, ev.raw)
	}
	return sink.Record{
		Topic: s.cfg.Topic,
		Key:   []byte(key),
		Value: value,
		Headers: []sink.Header{
			{Key: "ozone-event-id", Value: []byte(key)},
			{Key: "ozone-event-type", Value: []byte(ev.typ)},
			{Key: "created-at", Value: []byte(ev.createdAtRaw)},
		},
	}
}

// delivery is one event on its way to Kafka.
type delivery struct {
	s        *Source
	ctx      context.Context
	msg      *sink.Message
	received time.Time
}

// send waits for room in the in-flight window, records pos in the checkpoint and hands rec to the sink.
func (s *Source) send(ctx context.Context, rec sink.Record, pos position) error {
	d := &delivery{s: s, ctx: ctx, received: time.Now()}
	d.msg = &sink.Message{Records: []sink.Record{rec}, Done: d.done}
	if err := s.cp.Add(ctx, d.msg, pos); err != nil {
		return err
	}
	return d.send()
}

// send hands the message to the sink, retrying while the sink refuses it for a reason other than ctx ending. A
// message abandoned because ctx ended stays pending in the checkpoint, so the cursor never passes it.
func (d *delivery) send() error {
	for {
		err := d.s.cp.Send(d.ctx, d.msg)
		if err == nil {
			return nil
		}
		if errors.Is(err, sink.ErrStopped) {
			d.s.stop(err)
		}
		if d.ctx.Err() != nil || !backoff.Sleep(d.ctx, d.s.sinkRetry.failed(err)) {
			d.s.cp.Abandon(d.msg)
			return d.ctx.Err()
		}
	}
}

// done is the message's sink callback. A failed delivery is sent again after a backoff rather than given up:
// moving the cursor past it would lose the event, and stopping would stall every later one anyway.
func (d *delivery) done(err error) {
	s := d.s
	if errors.Is(err, sink.ErrStopped) {
		s.stop(err)
		s.cp.Abandon(d.msg)
		return
	}
	if err != nil {
		go func() {
			if backoff.Sleep(d.ctx, s.sinkRetry.failed(err)) {
				_ = d.send()
				return
			}
			s.cp.Abandon(d.msg)
		}()
		return
	}
	s.sinkRetry.ok()
	s.cfg.Observer.Delivered(time.Since(d.received))
	s.cp.Done(d.msg)
}
